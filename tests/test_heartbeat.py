"""DataQual inputs from the feed's state: lateness of the next 1m bar, missing bars in the served window."""

from __future__ import annotations

from klinestore.config import Config
from klinestore.ingest.feed import Feed
from klinestore.ingest.sink import MemorySink
from klinestore.jobs.gaps import GapBook
from klinestore.jobs.heartbeat import collect_health, lateness_s
from test_reconcile import minute

M = 60_000
T0 = 1_714_521_600_000


def test_lateness_of_the_next_1m_bar() -> None:
    # the 00:05 bar is the newest: the 00:06 bar closes at 00:07
    assert lateness_s(T0 + 5 * M, T0 + 7 * M, T0) is None
    assert lateness_s(T0 + 5 * M, T0 + 7 * M + 45_000, T0) == 45.0
    # nothing received since the start (00:03:20): the first close is due at 00:04
    assert lateness_s(-1, T0 + 4 * M, T0 + 3 * M + 20_000) is None
    assert lateness_s(-1, T0 + 4 * M + 10_000, T0 + 3 * M + 20_000) == 10.0
    # history from disk ends long before the start: not late until the first live close is due
    assert lateness_s(T0 - 60 * M, T0 + 4 * M, T0 + 3 * M + 20_000) is None


def test_health_counts_only_gaps_in_the_served_history() -> None:
    config = Config().replace(**{"symbols": ["BTCUSDT", "ETHUSDT"], "websocket.cache.kline_1m_history": 100})
    feed = Feed(config, MemorySink())
    feed.state.series("BTCUSDT", "1m").insert([minute(i, 100.0) for i in range(200, 205)])
    gaps = GapBook()
    gaps.add("BTCUSDT", "1m", T0 + 10 * M, T0 + 19 * M)  # older than the served 100 minutes
    gaps.add("BTCUSDT", "1m", T0 + 150 * M, T0 + 152 * M)
    now = T0 + 205 * M + 40_000
    btc, eth = collect_health(feed, gaps, now, T0 + 150 * M)
    assert (btc.symbol, btc.gap_bars, btc.stale_s, btc.missing_streams) == ("BTCUSDT", 3, None, ())
    assert (eth.symbol, eth.gap_bars, eth.stale_s) == ("ETHUSDT", 0, 54 * 60 + 40.0)
