"""Live ingest against the simulator over loopback: faults survived, truth matched, REST counted.

The simulator (``sim`` fixture of ``tests/simfixtures.py``: BTCUSDT and ETHUSDT at 60x, one 1m
bar per real second, from 2024-05-01) runs on its own thread; the feed runs on the test's
event loop with liveness, ping and backoff timers in tens or hundreds of ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from klinestore.config import Config
from klinestore.ingest.connection import ConnState
from klinestore.ingest.feed import Feed
from klinestore.ingest.sink import MemorySink
from klinestore.sim import SimThread
from simfixtures import START_MS, SimFactory

FAST: dict[str, Any] = {
    "symbols": ["BTCUSDT", "ETHUSDT"],
    "websocket.streams.kline_intervals": ["1m", "5m"],
    "websocket.heartbeat.check_interval": 0.1,
    "websocket.heartbeat.timeout": 0.6,
    "websocket.heartbeat.resubscribe_after": 0.3,
    "websocket.ping.interval": 0.3,
    "websocket.ping.timeout": 0.3,
    "websocket.reconnect.base_delay": 0.05,
    "websocket.reconnect.max_delay": 0.4,
    "websocket.reconnect.failed_retry_interval": 0.5,
    "websocket.reconnect.open_timeout": 2.0,
    "websocket.control_timeout": 2.0,
    "rest.retry_base_delay": 0.02,
    "rest.retry_max_delay": 0.1,
}


def config_for(sim: SimThread, **changes: Any) -> Config:
    return Config().replace(**{**FAST, "websocket.base_url": sim.ws_url, "websocket.rest_url": sim.rest_url, **changes})


async def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def all_subscribed(feed: Feed) -> bool:
    return bool(feed.pool.connections) and all(c.state == ConnState.SUBSCRIBED for c in feed.pool.connections)


def books_synced(feed: Feed) -> bool:
    return all(b.synced for b in feed.state.books.values())


def closed_bars(feed: Feed, symbol: str = "BTCUSDT", interval: str = "1m") -> int:
    return len(feed.state.series(symbol, interval).ring)


async def a(sim: SimThread, fn: str, *args: Any) -> Any:
    """Call a SimThread method without blocking the feed's loop."""
    return await asyncio.to_thread(getattr(sim, fn), *args)


def run_feed(sim: SimThread, scenario: Callable[[Feed], Awaitable[None]], **changes: Any) -> Feed:
    """Start a feed on ``sim``, run ``scenario`` once it is up, stop it; return it for assertions."""
    feed = Feed(config_for(sim, **changes), MemorySink())
    gaps: list[tuple[str, str, int, int, str]] = []
    feed.on_gap(lambda *gap: gaps.append(gap))
    feed.reported_gaps = gaps  # type: ignore[attr-defined]

    async def main() -> None:
        await feed.start()
        try:
            await until(lambda: all_subscribed(feed) and books_synced(feed) and closed_bars(feed) >= 1,
                        what="a subscribed feed with synced books and a closed bar")
            await scenario(feed)
        finally:
            await feed.stop()

    asyncio.run(main())
    return feed


def check_truth(feed: Feed, sim: SimThread) -> int:
    """Every kept closed bar equals the simulator's; every truth bar in range is kept or in a reported gap."""
    gaps = feed.reported_gaps  # type: ignore[attr-defined]
    checked = 0
    for (symbol, interval), series in feed.state.klines.items():
        rows = series.ring.tail()
        if len(rows) == 0:
            continue
        truth = {row[0]: row for row in sim.truth(symbol, interval)}
        for r in rows:
            t = truth[int(r["open_time"])]
            assert (int(r["close_time"]), float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"]),
                    float(r["volume"]), float(r["quote_volume"]), int(r["trades"]), float(r["taker_buy_volume"]),
                    float(r["taker_buy_quote_volume"])) == (
                t[6], float(t[1]), float(t[2]), float(t[3]), float(t[4]), float(t[5]), float(t[7]), t[8],
                float(t[9]), float(t[10])), f"{symbol} {interval} {t[0]}"
            checked += 1
        kept = {int(x) for x in rows["open_time"]}
        for open_time in truth:
            if int(rows["open_time"][0]) <= open_time <= int(rows["open_time"][-1]) and open_time not in kept:
                assert any(g[0] == symbol and g[1] == interval and g[2] <= open_time <= g[3] for g in gaps), \
                    f"{symbol} {interval} {open_time} missing and not reported as a gap"
    return checked


# --- faults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [{"kind": "drop"}, {"kind": "reset"}, {"kind": "stall", "seconds": 1.0}])
def test_connection_faults_are_survived_with_truthful_bars(sim: SimThread, fault: dict[str, Any]) -> None:
    async def scenario(feed: Feed) -> None:
        before = closed_bars(feed)
        await a(sim, "inject", fault)
        await until(lambda: feed.pool.reconnects() >= 2, what="both connections back")
        await until(lambda: all_subscribed(feed) and books_synced(feed) and closed_bars(feed) >= before + 2,
                    what="recovery")

    feed = run_feed(sim, scenario)
    assert check_truth(feed, sim) > 0
    reasons = [e.reason for e in feed.events.since() if e.to_state == "LOST"]
    expected = {"drop": "closed by exchange", "reset": "connection lost", "stall": ("ping timeout", "silent")}[fault["kind"]]
    assert reasons and all(r.startswith(expected) for r in reasons), reasons
    assert sim.ledger()["/fapi/v1/klines"] == 0  # websocket-only: reconnects never call REST klines


@pytest.mark.parametrize("kind", ["malformed", "duplicate", "out_of_order"])
def test_bad_frames_are_counted_never_fatal(sim: SimThread, kind: str) -> None:
    async def scenario(feed: Feed) -> None:
        before = closed_bars(feed)
        await a(sim, "inject", {"kind": kind, "count": 20})
        await until(lambda: closed_bars(feed) >= before + 2, what="bars after the bad frames")
        await until(lambda: books_synced(feed), what="every book in sync (a resync healed)")

    feed = run_feed(sim, scenario)
    assert check_truth(feed, sim) > 0
    assert feed.pool.reconnects() == 0 and all(c.internal_errors == 0 for c in feed.pool.connections)
    if kind == "malformed":
        assert feed.state.rejected["malformed"] == 20


@pytest.mark.parametrize(
    "stream", ["ethusdt@kline_1m", "ethusdt@kline_5m", "ethusdt@aggTrade", "ethusdt@depth@500ms", "ethusdt@markPrice@1s"]
)
def test_a_silent_stream_is_flagged_and_resubscribed(sim: SimThread, stream: str) -> None:
    """A stall of any stream type while its market trades is missing within the heartbeat timeout."""
    flagged_after: list[float] = []

    async def scenario(feed: Feed) -> None:
        conn = feed.pool.owner(stream)
        assert conn is not None
        started = time.monotonic()
        await a(sim, "inject", {"kind": "stall_stream", "stream": stream, "seconds": 1.5})
        await until(lambda: stream in feed.missing_streams().get("ETHUSDT", []), what="the stream flagged")
        flagged_after.append(time.monotonic() - started)
        await until(lambda: conn.resubscribes >= 1, what="a resubscription")
        await until(lambda: feed.missing_streams() == {}, timeout=5, what="the stream back")
        assert conn.state == ConnState.SUBSCRIBED and conn.reconnects == 0

    feed = run_feed(sim, scenario)
    hb = feed.config.websocket.heartbeat
    assert flagged_after[0] <= hb.check_interval + hb.timeout + 0.3
    assert [e for e in feed.events.since() if e.to_state == "LOST"] == []


def test_the_order_book_equals_the_simulators_after_a_depth_gap(sim: SimThread) -> None:
    async def scenario(feed: Feed) -> None:
        book = feed.book("BTCUSDT")
        await a(sim, "inject", {"kind": "depth_gap", "symbol": "BTCUSDT", "count": 3})
        await until(lambda: book.resyncs >= 1, what="the gap noticed")
        await until(lambda: book.synced, what="the book synced again")
        await asyncio.sleep(0.3)
        # a bounded book serves only what its snapshot showed: once the price walks toward the edge it
        # refreshes (here at most every 0.2 s); compare while it holds a full window
        await until(lambda: book.synced and not book.refresh_wanted, what="the book synced with a full window")
        bids, asks = book.depth(50)
        theirs = sim.order_book("BTCUSDT", book.last_update_id)  # our loop is blocked: the book stands still
        assert bids == [(float(p), float(q)) for p, q in theirs["bids"][:50]]
        assert asks == [(float(p), float(q)) for p, q in theirs["asks"][:50]]
        assert book.best_bid()[0] < book.best_ask()[0]  # type: ignore[index]

    feed = run_feed(sim, scenario, **{"websocket.streams.depth_refresh_interval": 0.2})
    assert feed.depth_sync.fetched >= 2 and feed.book("BTCUSDT").refreshes <= feed.depth_sync.fetched
    assert feed.depth_sync.fetched >= 3  # two at start, one after the gap


def test_rest_errors_are_retried(sim: SimThread) -> None:
    async def scenario(feed: Feed) -> None:
        await a(sim, "inject", {"kind": "rest_error", "code": 503, "count": 2})
        change = await feed.refresh_listings()
        assert change.new == () and change.delisted == ()

    feed = run_feed(sim, scenario)
    assert feed.ledger.totals()["/fapi/v1/exchangeInfo"]["errors"] == {"503": 2}
    assert feed.rest.retries == 2


# --- rotation, listings, modes -------------------------------------------------------------------


def test_rotation_before_the_exchanges_age_limit_misses_nothing(sim_factory: SimFactory) -> None:
    # The exchange closes connections after 150 s of its time (2.5 s real); we rotate after 90 s.
    sim = sim_factory(symbols=("BTCUSDT", "ETHUSDT"), speed=60, seed=7, start_ms=START_MS, max_connection_age=150.0)

    async def scenario(feed: Feed) -> None:
        await until(lambda: feed.pool.rotations >= 4, timeout=15, what="rotations")
        await until(lambda: all_subscribed(feed) and books_synced(feed), what="steady state")

    feed = run_feed(sim, scenario, **{"websocket.rotate_after": 90.0})
    assert check_truth(feed, sim) > 0
    assert feed.reported_gaps == []  # type: ignore[attr-defined]
    assert [e for e in feed.events.since() if e.to_state == "LOST"] == []
    assert sim.stats()["age_closes"] == 0
    assert all(book.resyncs == 0 for book in feed.state.books.values())


def test_new_listings_are_subscribed_live_without_reconnecting_anyone(sim: SimThread) -> None:
    async def scenario(feed: Feed) -> None:
        ids = [c.id for c in feed.pool.connections]
        await a(sim, "list_symbol", "NEWUSDT")  # trading from the next exchange minute
        news: list[tuple[str, ...]] = []

        async def refreshed() -> bool:
            news.append((await feed.refresh_listings()).new)
            return bool(news[-1])

        deadline = time.monotonic() + 5
        while not await refreshed() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert news[-1] == ("NEWUSDT",) and news.count(("NEWUSDT",)) == 1
        await until(lambda: closed_bars(feed, "NEWUSDT", "1m") >= 2, what="the new symbol's bars")
        assert [c.id for c in feed.pool.connections] == ids and feed.pool.reconnects() == 0
        assert feed.symbols["NEWUSDT"] == ("1m", "5m", "15m")
        await a(sim, "delist_symbol", "NEWUSDT")
        for _ in range(50):
            change = await feed.refresh_listings()
            if change.delisted:
                break
            await asyncio.sleep(0.1)
        assert change.delisted == ("NEWUSDT",) and "NEWUSDT" not in feed.symbols
        assert not any(s.startswith("newusdt@") for s in feed.pool.streams())

    feed = run_feed(sim, scenario)
    assert [e for e in feed.events.since() if e.to_state == "LOST"] == []


def test_fallback_back_fills_history_and_a_gap_from_rest(sim: SimThread) -> None:
    async def scenario(feed: Feed) -> None:
        backfill = feed.backfill
        assert backfill is not None
        await until(lambda: backfill.pending == 0 and backfill.filled_bars >= 2 * 40, what="start-up history")
        before = backfill.filled_bars
        await a(sim, "inject", {"kind": "stall", "seconds": 3.0})  # ~2 bars close while we hear nothing
        await until(lambda: feed.pool.reconnects() >= 2 and all_subscribed(feed), what="reconnected")
        await until(lambda: backfill.filled_bars > before and backfill.pending == 0, what="the gap back-filled")

    feed = run_feed(sim, scenario, **{"modes.websocket_only_klines": False, "modes.disable_rest_fallback": False,
                                      "websocket.cache.kline_max_size": 40, "websocket.cache.kline_1m_history": 60,
                                      "websocket.heartbeat.timeout": 2.0, "websocket.ping.interval": 5.0})
    assert check_truth(feed, sim) >= 2 * (60 + 40)
    one_m = feed.state.series("BTCUSDT", "1m")
    assert one_m.contiguous_count() == len(one_m.ring) == 60  # the gap is healed
    assert any(g[4] == "reconnect" for g in feed.reported_gaps)  # type: ignore[attr-defined]
    assert sim.ledger()["/fapi/v1/klines"] >= 4


def test_coalesced_reads_lose_nothing_and_survive_a_drop(sim: SimThread) -> None:
    async def scenario(feed: Feed) -> None:
        before = closed_bars(feed)
        await a(sim, "inject", {"kind": "drop"})
        await until(lambda: feed.pool.reconnects() >= 2 and all_subscribed(feed), what="reconnected")
        await until(lambda: closed_bars(feed) >= before + 2 and books_synced(feed), what="bars after the drop")

    feed = run_feed(sim, scenario, **{"websocket.read_coalesce": 0.005})
    assert check_truth(feed, sim) > 0 and feed.state.rejected == {}


def test_a_quiet_market_raises_no_alarm_and_a_stalled_feed_still_does(sim_factory: SimFactory) -> None:
    """A symbol with minutes-long spells without trades: its silent aggTrade stream is quiet (shown,
    not missing, not resubscribed); stalling the active symbol's aggTrade stream is still flagged."""
    sim = sim_factory(symbols=("BTCUSDT", "QUIETUSDT"), quiet_symbols=("QUIETUSDT",), speed=60, seed=7,
                      start_ms=START_MS)
    seen_quiet: list[str] = []
    ever_missing: set[str] = set()

    async def watch(feed: Feed, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            seen_quiet.extend(feed.quiet_streams().get("QUIETUSDT", []))
            ever_missing.update(feed.missing_streams().get("QUIETUSDT", []))
            await asyncio.sleep(0.05)

    async def scenario(feed: Feed) -> None:
        await until(lambda: "quietusdt@aggTrade" in feed.quiet_streams().get("QUIETUSDT", []), timeout=15,
                    what="the quiet symbol's aggTrade stream judged quiet")
        await watch(feed, 3.0)
        await a(sim, "inject", {"kind": "stall_stream", "stream": "btcusdt@aggTrade", "seconds": 2.0})
        hb = feed.config.websocket.heartbeat
        started = time.monotonic()
        await until(lambda: "btcusdt@aggTrade" in feed.missing_streams().get("BTCUSDT", []), what="the stall flagged")
        assert time.monotonic() - started <= hb.check_interval + hb.timeout + 0.5
        await watch(feed, 1.0)

    run_feed(sim, scenario, symbols=["BTCUSDT", "QUIETUSDT"])
    assert "quietusdt@aggTrade" in seen_quiet
    assert ever_missing == set(), ever_missing  # so never resubscribed either (only missing streams are)
