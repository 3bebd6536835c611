"""Trades to bars: the exchange's rules, exact decimal volumes, empty minutes in between."""

from __future__ import annotations

from decimal import Decimal

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from klinestore.storage.trades import bars_from_trades

trade = st.tuples(
    st.integers(1, 10**7).map(lambda c: f"{c / 100:.2f}"),  # price, 2 places
    st.integers(1, 10**6).map(lambda u: f"{u / 1000:.3f}"),  # quantity, 3 places
    st.integers(1, 5),  # trades in the aggregate
    st.integers(0, 5 * 60_000),  # time offset
    st.booleans(),  # buyer is maker
)


@settings(max_examples=40, deadline=None)
@given(st.lists(trade, min_size=1, max_size=80))
def test_bars_follow_the_exchange_rules_with_exact_sums(trades: list[tuple]) -> None:
    trades = sorted(trades, key=lambda t: t[3])
    rows, next_id = [], 1
    for agg_id, (price, qty, n, offset, maker) in enumerate(trades, start=1):
        rows.append((agg_id, price, qty, next_id, next_id + n - 1, 1_704_067_200_000 + offset, maker))
        next_id += n
    frame = pl.DataFrame(rows, orient="row", schema=["agg_trade_id", "price", "quantity", "first_trade_id",
                                                     "last_trade_id", "transact_time", "is_buyer_maker"])
    bars = bars_from_trades(frame, "BTCUSDT")
    minutes = bars["open_time"].to_list()
    assert minutes == list(range(minutes[0], minutes[-1] + 1, 60_000))  # no hole between first and last
    previous_close = None
    for b in bars.iter_rows(named=True):
        inside = [r for r in rows if r[5] // 60_000 * 60_000 == b["open_time"]]
        if not inside:
            assert b["volume"] == b["trades"] == 0 and b["open"] == b["high"] == b["low"] == b["close"] == previous_close
            continue
        prices = [float(r[1]) for r in inside]
        assert (b["open"], b["high"], b["low"], b["close"]) == (prices[0], max(prices), min(prices), prices[-1])
        assert b["trades"] == sum(r[4] - r[3] + 1 for r in inside)
        assert b["volume"] == float(sum(Decimal(r[2]) for r in inside))
        assert b["quote_volume"] == float(sum(Decimal(r[1]) * Decimal(r[2]) for r in inside))
        assert b["taker_buy_quote_volume"] == float(sum(Decimal(r[1]) * Decimal(r[2]) for r in inside if not r[6]))
        assert b["close_time"] == b["open_time"] + 59_999 and b["source"] == "import"
        previous_close = b["close"]
