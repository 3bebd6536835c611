"""The seeds' load under faults: 200 symbols, every default stream, the simulator at real speed.

Short in CI (a few drops in ~12 s); ``pytest --long`` runs ten minutes. What it holds the pool
to at scale: the connections it sized itself (8 for 1600 streams) come back after every drop
with every stream, nothing is refused or left unplaced, no connection ends FAILED, the
exchange's control-message limit is never hit, and memory stays flat.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from klinestore.config import Config
from klinestore.ingest.feed import Feed
from klinestore.ingest.sink import MemorySink
from simfixtures import START_MS, SimFactory
from test_ingest_sim import FAST, a, all_subscribed, until

SYMBOLS = tuple(f"S{i:03d}USDT" for i in range(200))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.soak
def test_200_symbols_at_real_speed_come_back_whole_after_every_drop(sim_factory: SimFactory, long_run: bool) -> None:
    sim = sim_factory(symbols=SYMBOLS, speed=1, seed=7, start_ms=START_MS, history_minutes=10)
    seconds, period = (600.0, 5.0) if long_run else (12.0, 3.0)
    changes: dict[str, Any] = {
        **FAST, "symbols": list(SYMBOLS), "websocket.base_url": sim.ws_url, "websocket.rest_url": sim.rest_url,
        "websocket.streams.kline_intervals": ["1m", "5m", "15m", "1h", "4h"],  # the default streams, 8 a symbol
        "websocket.heartbeat.timeout": 30.0, "websocket.heartbeat.resubscribe_after": 60.0,  # thin aggTrade is quiet
        "websocket.reconnect.reset_after": 1.0,
    }
    feed = Feed(Config().replace(**changes), MemorySink())
    seen: dict[str, float] = {}

    async def main() -> None:
        await feed.start()
        try:
            await until(lambda: all_subscribed(feed), timeout=60, what="8 connections subscribed")
            seen["rss_start"] = rss_mb()
            drops = 0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await a(sim, "inject", {"kind": "drop"})
                drops += 1
                await asyncio.sleep(period)
            await until(lambda: all_subscribed(feed) and feed.pool.reconnects() >= drops * len(feed.pool.connections),
                        timeout=60, what="every connection back after the last drop")
            back = time.monotonic()
            klines = [s for c in feed.pool.connections for s in c.streams if "@kline_" in s]
            await until(lambda: all(feed.pool.owner(s).last_seen.get(s, 0) > back for s in klines),  # type: ignore[union-attr]
                        timeout=30, what="every kline stream delivering again")
            seen["rss_end"] = rss_mb()
            seen["drops"] = drops
        finally:
            await feed.stop()

    asyncio.run(main())
    pool = feed.pool
    assert len(pool.connections) == 8 and sum(len(c.streams) for c in pool.connections) == 1600
    assert pool.refused == {} and pool.unplaced == [] and sorted(pool.streams()) == sorted(feed.streams())
    assert not [e for e in feed.events.since() if e.to_state == "FAILED"]
    assert all(c.control_errors == 0 for c in pool.connections)
    assert sim.stats()["rate_limit_closes"] == 0  # never 10 control messages a second
    assert seen["rss_end"] - seen["rss_start"] < 150, seen  # flat: a leak per reconnect would show
