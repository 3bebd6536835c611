"""Connections and the pool against things no simulator does: a dead port, a refused subscription, a storm.

Everything else that crosses a socket is tested against the simulator (test_ingest_sim.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

import frames
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
            monkey_chunk = __import__("klinestore.ingest.session", fromlist=["x"])
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


def _symbol(stream: str) -> str:
    return stream.split("@")[0].upper()


async def _until(cond: Any, what: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def test_a_stream_removed_while_a_rotation_waits_is_gone_and_can_come_back() -> None:
    """Issue 12, bug 1: a delisting during a 24 h rotation left the stream owned by no one's connection."""
    release = asyncio.Event()
    sessions: list[list[str]] = []

    async def exchange(ws: ServerConnection) -> None:
        mine: list[str] = []
        sessions.append(mine)
        first = len(sessions) == 1

        async def deliver() -> None:
            if not first:
                await release.wait()  # the replacement delivers only when the test says so
            while True:
                for s in list(mine):
                    await ws.send(frames.kline(_symbol(s)))
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(deliver())
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["method"] == "SUBSCRIBE":
                    mine += msg["params"]
                else:
                    mine[:] = [s for s in mine if s not in msg["params"]]
                await ws.send(json.dumps({"result": None, "id": msg["id"]}))
        finally:
            sender.cancel()

    async def main() -> None:
        async with serve(exchange, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            pool, _ = pool_for(config(**{"websocket.base_url": f"ws://127.0.0.1:{port}"}))
            a, b = "aaausdt@kline_1m", "bbbusdt@kline_1m"
            try:
                await pool.start([a, b])
                old = pool.connections[0]
                await _until(lambda: old.delivering.is_set(), "first connection delivering")
                rotation = asyncio.create_task(pool.rotate(old))
                await _until(lambda: len(sessions) == 2 and len(sessions[1]) == 2, "replacement subscribed")
                await pool.remove([b])  # delisted while the replacement waits
                release.set()
                assert await rotation
                assert pool.streams() == [a] and pool.owner(b) is None
                assert [list(c.streams) for c in pool.connections] == [[a]]
                assert await pool.add([b]) == [b]  # listed again: placed, subscribed, delivering
                await _until(lambda: b in pool.connections[0].last_seen, "relisted stream delivering")
                assert pool.owner(b) is pool.connections[0]
            finally:
                await pool.stop()

    asyncio.run(main())


def test_an_error_reply_refuses_only_its_chunk_and_later_chunks_are_still_sent() -> None:
    """Issue 12, bug 2: one refused SUBSCRIBE marked every later, never-sent chunk refused."""
    bad = "badusdt@kline_1m"

    async def exchange(ws: ServerConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            if bad in msg["params"]:
                await ws.send(json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": msg["id"]}))
            else:
                await ws.send(json.dumps({"result": None, "id": msg["id"]}))

    async def main() -> None:
        async with serve(exchange, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            pool, _ = pool_for(config(**{"websocket.base_url": f"ws://127.0.0.1:{port}"}))
            module = __import__("klinestore.ingest.session", fromlist=["x"])
            chunk, module.SUBSCRIBE_CHUNK = module.SUBSCRIBE_CHUNK, 2
            streams = ["aaausdt@kline_1m", "bbbusdt@kline_1m", bad, "cccusdt@kline_1m",
                       "dddusdt@kline_1m", "eeeusdt@kline_1m"]
            try:
                await pool.start(streams)
                conn = pool.connections[0]
                await _until(lambda: conn.state == ConnState.SUBSCRIBED, "subscribed")
                assert sorted(pool.refused) == [bad, "cccusdt@kline_1m"]  # the chunk the error answered
                assert conn.subscribed == {"aaausdt@kline_1m", "bbbusdt@kline_1m", "dddusdt@kline_1m",
                                           "eeeusdt@kline_1m"}
                assert sorted(pool.streams()) == sorted(conn.subscribed)
            finally:
                module.SUBSCRIBE_CHUNK = chunk
                await pool.stop()

    asyncio.run(main())


def test_backoff_grows_while_sessions_drop_after_subscribing_and_resets_after_sustained_data() -> None:
    """Issue 12, bug 3: a SUBSCRIBE acknowledgement reset the backoff, so ack-then-drop retried at base for ever."""
    sessions = 0

    async def exchange(ws: ServerConnection) -> None:
        nonlocal sessions
        sessions += 1
        sustained = sessions == 4  # the 4th session delivers past reset_after, then drops
        msg = json.loads(await ws.recv())
        await ws.send(json.dumps({"result": None, "id": msg["id"]}))
        for _ in range(30 if sustained else 1):
            await ws.send(frames.kline("AAAUSDT"))
            await asyncio.sleep(0.02 if sustained else 0)
        await ws.close(1011, "dropped")

    async def main() -> list[str]:
        async with serve(exchange, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            cfg = config(**{"websocket.base_url": f"ws://127.0.0.1:{port}", "websocket.reconnect.max_retries": 6,
                            "websocket.reconnect.reset_after": 0.2, "websocket.reconnect.jitter_ratio": 0.0})
            pool, events = pool_for(cfg)
            try:
                await pool.start(["aaausdt@kline_1m"])
                await _until(lambda: sum(e.to_state == "RECONNECTING" for e in events.since()) >= 5, "5 losses")
            finally:
                await pool.stop()
            return [e.reason.split(" in ")[0] for e in events.since() if e.to_state == "RECONNECTING"][:5]

    assert asyncio.run(main()) == ["retry 1/6", "retry 2/6", "retry 3/6", "retry 1/6", "retry 2/6"]


def test_later_streams_open_connections_as_needed_and_exceed_the_preference_only_at_the_bound() -> None:
    async def exchange(ws: ServerConnection) -> None:
        async for raw in ws:
            await ws.send(json.dumps({"result": None, "id": json.loads(raw)["id"]}))

    async def placed(bound: int | None) -> list[int]:
        async with serve(exchange, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            pool, _ = pool_for(config(**{"websocket.base_url": f"ws://127.0.0.1:{port}",
                                         "websocket.connection_pool.max_streams_per_connection": 2,
                                         "websocket.connection_pool.max_connections": bound}))
            try:
                await pool.start([f"s{i}usdt@kline_1m" for i in range(4)])
                await _until(lambda: all(c.state == ConnState.SUBSCRIBED for c in pool.connections), "up")
                later = [f"n{i}usdt@kline_1m" for i in range(3)]
                assert sorted(await pool.add(later)) == later and pool.unplaced == []
                await _until(lambda: all(c.state == ConnState.SUBSCRIBED for c in pool.connections)
                             and sum(len(c.subscribed) for c in pool.connections) == 7, "all subscribed")
                return sorted(len(c.streams) for c in pool.connections)
            finally:
                await pool.stop()

    assert asyncio.run(placed(None)) == [1, 2, 2, 2]  # the pool opens what the streams need
    assert asyncio.run(placed(2)) == [3, 4]  # bounded: past the preference, never unplaced
