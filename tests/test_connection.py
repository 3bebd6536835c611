"""Connections and the pool against things no simulator does: a dead port, a refused subscription, a storm.

Everything else that crosses a socket is tested against the simulator (test_ingest_sim.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from klinestore.config import Config
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.connection import ConnState
from klinestore.ingest.dispatcher import Dispatcher
from klinestore.ingest.eventlog import EventLog
from klinestore.ingest.pool import Pool
from klinestore.ingest.sink import MemorySink
from klinestore.ingest.state import MarketState


def config(**changes: Any) -> Config:
    fast = {
        "websocket.reconnect.base_delay": 0.02, "websocket.reconnect.max_delay": 0.2,
        "websocket.reconnect.max_retries": 4, "websocket.reconnect.failed_retry_interval": 0.3,
        "websocket.reconnect.open_timeout": 1.0, "websocket.heartbeat.check_interval": 0.05,
        "websocket.control_timeout": 1.0,
    }
    return Config().replace(**{**fast, **changes})


def pool_for(cfg: Config, **kw: Any) -> tuple[Pool, EventLog]:
    clock = ExchangeClock()
    clock.sync(1_700_000_000_000)
    state = MarketState(cfg.websocket.cache, clock)
    events = EventLog(now_ms=clock.now_ms)
    return Pool(cfg.websocket, Dispatcher(state, MemorySink(), clock), clock, events, **kw), events


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_retries_follow_the_backoff_then_failed_then_a_new_episode() -> None:
    cfg = config(**{"websocket.base_url": f"ws://127.0.0.1:{dead_port()}", "websocket.reconnect.jitter_ratio": 0.1})

    async def main() -> list[tuple[float, str, str]]:
        pool, events = pool_for(cfg)
        await pool.start(["btcusdt@kline_1m"])
        while not any(e.reason == "after FAILED" for e in events.since()):
            await asyncio.sleep(0.01)
        await pool.stop()
        log = events.since()
        log = log[: next(i for i, e in enumerate(log) if e.reason == "after FAILED") + 1]
        return [(e.ts_ms / 1000, e.to_state, e.reason) for e in log]

    seen = asyncio.run(main())
    states = [s for _, s, _ in seen]
    assert states == ["CONNECTING", "RECONNECTING"] * 4 + ["CONNECTING", "FAILED", "CONNECTING"]
    attempts = [t for t, s, _ in seen if s == "CONNECTING"]
    gaps = [b - a for a, b in zip(attempts, attempts[1:5])]
    for gap, nominal in zip(gaps, (0.02, 0.04, 0.08, 0.16)):
        assert nominal * 0.9 <= gap <= nominal * 1.1 + 0.05
    assert attempts[-1] - seen[-2][0] >= 0.3 * 0.95  # FAILED waits failed_retry_interval, then tries again
    assert "4 retries spent" in seen[-2][2]


def test_connection_attempts_across_the_pool_are_bounded() -> None:
    cfg = config(**{
        "websocket.base_url": "ws://127.0.0.1:1", "websocket.reconnect.max_concurrent_connects": 2,
        "websocket.connection_pool.max_streams_per_connection": 1, "websocket.connection_pool.max_connections": 8,
    })
    in_flight = peak = attempts = 0

    async def slow_refusal(url: str, **kw: Any) -> None:
        nonlocal in_flight, peak, attempts
        in_flight += 1
        attempts += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.03)
        in_flight -= 1
        raise ConnectionRefusedError("refused")

    async def main() -> None:
        pool, _ = pool_for(cfg, connect_fn=slow_refusal)
        await pool.start([f"s{i}usdt@kline_1m" for i in range(8)])
        await asyncio.sleep(0.4)
        await pool.stop()

    asyncio.run(main())
    assert peak == 2 and attempts >= 8


def test_too_many_subscriptions_moves_streams_to_another_connection() -> None:
    """An exchange that allows 3 streams per connection (code 4, then close 1008), like Binance at 1024."""

    async def exchange(ws: ServerConnection) -> None:
        subscribed: list[str] = []
        async for raw in ws:
            msg = json.loads(raw)
            if len(subscribed) + len(msg["params"]) > 3:
                await ws.send(json.dumps({"error": {"code": 4, "msg": "Too many subscriptions"}, "id": msg["id"]}))
                await ws.close(1008, "Too many subscriptions")
                return
            subscribed += msg["params"]
            await ws.send(json.dumps({"result": None, "id": msg["id"]}))

    async def main() -> None:
        async with serve(exchange, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            cfg = config(**{"websocket.base_url": f"ws://127.0.0.1:{port}",
                            "websocket.connection_pool.max_streams_per_connection": 10})
            pool, _ = pool_for(cfg)
            monkey_chunk = __import__("klinestore.ingest.connection", fromlist=["x"])
            chunk, monkey_chunk.SUBSCRIBE_CHUNK = monkey_chunk.SUBSCRIBE_CHUNK, 2
            try:
                streams = [f"s{i}usdt@kline_1m" for i in range(7)]
                await pool.start(streams)
                for _ in range(200):
                    await asyncio.sleep(0.02)
                    if (sorted(pool.streams()) == sorted(streams) and pool.connections
                            and all(c.state == ConnState.SUBSCRIBED for c in pool.connections)):
                        break
                assert sorted(s for c in pool.connections for s in c.subscribed) == sorted(streams)
                assert all(len(c.streams) <= 3 for c in pool.connections) and len(pool.connections) >= 3
                assert pool.refused == {} and pool.unplaced == []
            finally:
                monkey_chunk.SUBSCRIBE_CHUNK = chunk
                await pool.stop()

    asyncio.run(main())
