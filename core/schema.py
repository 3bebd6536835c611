"""The bar: klinestore's one record type, in memory, in the WAL and in Parquet.

Key: (symbol, interval, open_time); the last write wins, and exchange bars (``ws``, ``rest``,
``import``) win over bars klinestore derived itself (``resample``, and ``trades``: a 1m bar
rebuilt exactly from the aggTrades when the kline stream missed it). Prices and volumes are
float64 parsed from the exchange's decimal strings; times are UTC milliseconds in memory and
UTC timestamps in Parquet.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import pyarrow as pa

Source = Literal["ws", "rest", "import", "resample", "trades"]
SOURCES: tuple[str, ...] = ("ws", "rest", "import", "resample", "trades")
#: Sources that are the exchange's own bars; they win over derived ones.
EXCHANGE_SOURCES = frozenset({"ws", "rest", "import"})

#: The 11 numeric kline fields, in Binance's order (the REST/CSV layout minus ``ignore``).
KLINE_FIELDS: tuple[str, ...] = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume",
)


class Bar(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One closed (or, in memory only, open) kline."""

    symbol: str
    interval: str
    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int
    taker_buy_volume: float
    taker_buy_quote_volume: float
    source: str = "ws"
    is_complete: bool = True

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.symbol, self.interval, self.open_time)

    def rest_row(self) -> list[object]:
        """The 12-field REST/archive layout (numbers as JSON numbers, ``ignore`` as "0")."""
        return [
            self.open_time, self.open, self.high, self.low, self.close, self.volume, self.close_time,
            self.quote_volume, self.trades, self.taker_buy_volume, self.taker_buy_quote_volume, "0",
        ]


#: Arrow schema of the bar columns as stored in Parquet (Hive partition keys excluded).
BAR_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("interval", pa.string(), nullable=False),
        pa.field("open_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("close_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("quote_volume", pa.float64(), nullable=False),
        pa.field("trades", pa.int64(), nullable=False),
        pa.field("taker_buy_volume", pa.float64(), nullable=False),
        pa.field("taker_buy_quote_volume", pa.float64(), nullable=False),
        pa.field("is_complete", pa.bool_(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)
