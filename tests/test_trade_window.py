"""The aggTrade window: bounded by count and exchange time, deduplicated by aggregate id."""

from __future__ import annotations

from frames import T0, agg_trade, event
from klinestore.ingest.trades import TradeWindow


def test_window_is_bounded_by_count_and_by_exchange_time() -> None:
    window = TradeWindow("BTCUSDT", capacity=100, window_s=60)
    for a in range(1, 301):
        assert window.add(event(agg_trade(a=a, T=T0 + a * 1000))) is None
    assert len(window.ring) == 100 and window.ring.key_at(0) == 201
    recent = window.recent(T0 + 300_000)
    assert list(recent["id"]) == list(range(241, 301))  # the last 60 s of exchange time
    frame = window.frame(T0 + 300_000)
    assert frame.height == 60 and frame["agg_id"][-1] == 300 and frame["price"][0] == 100.0


def test_duplicates_are_counted_and_late_trades_inserted_in_order() -> None:
    window = TradeWindow("BTCUSDT", capacity=10, window_s=60)
    for a in (1, 2, 4, 5):
        window.add(event(agg_trade(a=a, T=T0 + a)))
    assert window.add(event(agg_trade(a=4, T=T0 + 4))) == "duplicate_trade"
    assert window.add(event(agg_trade(a=3, T=T0 + 3))) is None
    assert list(window.recent(None)["id"]) == [1, 2, 3, 4, 5]
    for a in range(6, 20):
        window.add(event(agg_trade(a=a, T=T0 + a)))
    assert window.add(event(agg_trade(a=2, T=T0 + 2))) == "stale_trade"
    assert dict(window.rejected) == {"duplicate_trade": 1, "stale_trade": 1}
