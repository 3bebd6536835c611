"""1m bars from aggTrades, built the way the exchange builds its klines.

Per UTC minute of trade time: open = the first trade's price, high/low = max/min price,
close = the last trade's price (trades ordered by aggregate id), volume = sum of quantities,
quote volume = sum of price × quantity, trades = the number of trades (``last_trade_id -
first_trade_id + 1`` per aggregate trade), taker buy volumes = the same sums over trades
whose buyer is not the maker (``is_buyer_maker`` false: the buyer took liquidity). A minute
without trades between the first and the last traded minute is an empty bar at the previous
close, as the exchange emits it.

Volumes are summed in exact decimal arithmetic (Polars ``Decimal`` at 18 places, enough for
any product of two 8-place decimals) and converted to float64 once, through the decimal
string, so they equal the float64 parse of the exchange's own kline values.
"""

from __future__ import annotations

import polars as pl

from klinestore.core.intervals import MINUTE_MS
from klinestore.storage.frames import BAR_COLUMNS, MS_SCHEMA

EXACT = pl.Decimal(38, 18)
TRADE_COLUMNS: tuple[str, ...] = (
    "agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time", "is_buyer_maker",
)


def bars_from_trades(trades: pl.DataFrame, symbol: str, *, source: str = "import") -> pl.DataFrame:
    """1m bars (working frame, Int64 ms times) of one symbol's aggTrades.

    ``price`` and ``quantity`` are the exchange's decimal strings (or floats, converted
    through their shortest decimal form); ``transact_time`` is UTC ms.
    """
    if trades.is_empty():
        return pl.DataFrame(schema=MS_SCHEMA)
    text = {c: pl.col(c).cast(pl.String) if trades.schema[c] != pl.String else pl.col(c) for c in ("price", "quantity")}
    frame = trades.sort("agg_trade_id").with_columns(
        (pl.col("transact_time") // MINUTE_MS * MINUTE_MS).alias("open_time"),
        text["price"].cast(pl.Float64).alias("_price"),
        text["price"].cast(EXACT).alias("_p"),
        text["quantity"].cast(EXACT).alias("_q"),
        (pl.col("last_trade_id") - pl.col("first_trade_id") + 1).alias("_n"),
    ).with_columns((pl.col("_p") * pl.col("_q")).alias("_pq"))
    taker = ~pl.col("is_buyer_maker")
    minutes = frame.group_by("open_time").agg(
        pl.col("_price").first().alias("open"),
        pl.col("_price").max().alias("high"),
        pl.col("_price").min().alias("low"),
        pl.col("_price").last().alias("close"),
        pl.col("_q").sum().alias("volume"),
        pl.col("_pq").sum().alias("quote_volume"),
        pl.col("_n").sum().alias("trades"),
        pl.col("_q").filter(taker).sum().alias("taker_buy_volume"),
        pl.col("_pq").filter(taker).sum().alias("taker_buy_quote_volume"),
    )
    exact_sums = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
    minutes = minutes.with_columns(pl.col(c).cast(pl.String).cast(pl.Float64) for c in exact_sums)
    first, last = minutes.get_column("open_time").min(), minutes.get_column("open_time").max()
    grid = pl.DataFrame({"open_time": pl.int_range(first, last + MINUTE_MS, MINUTE_MS, eager=True)})
    bars = grid.join(minutes, on="open_time", how="left").sort("open_time")
    previous_close = pl.col("close").forward_fill()
    return bars.with_columns(
        *(pl.col(c).fill_null(previous_close) for c in ("open", "high", "low", "close")),
        *(pl.col(c).fill_null(0.0) for c in exact_sums),
        pl.col("trades").fill_null(0),
        (pl.col("open_time") + MINUTE_MS - 1).alias("close_time"),
        pl.lit(symbol).alias("symbol"),
        pl.lit("1m").alias("interval"),
        pl.lit(True).alias("is_complete"),
        pl.lit(source).alias("source"),
    ).select(BAR_COLUMNS).cast(MS_SCHEMA)
