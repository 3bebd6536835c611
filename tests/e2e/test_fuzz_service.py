"""Hypothesis-made garbage through a running `Service`: WebSocket frames and REST bodies.

WebSocket: a tiny websockets server on 127.0.0.1 plays the exchange (it acknowledges every
SUBSCRIBE, then sends what a test gives it); a real :class:`klinestore.service.Service` with
its BarStore connects to it. Each example interleaves valid closed 1m klines with bad frames
of one of the kinds below; afterwards the service is still running (its connection up, no
internal error, status.json rewritten), each bad frame was counted exactly once (a
``rejected`` reason, or ``unexpected`` for a stream it never subscribed), and storage holds
exactly the valid bars, equal to what was sent: nothing from a bad frame.

REST: the same service with ``transport=httpx.MockTransport`` answering exchangeInfo, klines,
depth and server time with generated bodies (wrong types, truncated, huge, HTML error pages,
418/429 with and without Retry-After); the calls raise the client's errors, never anything
else, and the service's loop and timers go on.

The service and the server run on one event loop in a background thread, so hypothesis drives
examples synchronously. ``pytest --long`` runs 10x the examples.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve

from klinestore.config import Config
from klinestore.core.intervals import MINUTE_MS
from klinestore.core.options import MAX_SECONDS
from klinestore.ingest.errors import IngestError
from klinestore.service import Service
from klinestore.storage import read_bars

T = TypeVar("T")
SYMBOL = "BTCUSDT"
STREAM = "btcusdt@kline_1m"
T0 = 1_714_521_600_000  # 2024-05-01T00:00Z
KLINE_FIELDS = ("t", "T", "i", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q")
PRICES, QTYS = ("o", "c", "h", "l"), ("v", "q", "V", "Q")


# --- a loop in a thread, the fake exchange, the service -------------------------------------------


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class FakeExchange:
    """Acknowledges control requests; sends the frames it is given to the newest connection."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self._ws: ServerConnection | None = None
        self._server: Any = None
        self.subscribed = asyncio.Event()

    async def start(self) -> str:
        self._server = await serve(self._handle, "127.0.0.1", 0, max_size=None)
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        async for message in ws:
            request = json.loads(message)
            self.requests.append(request)
            await ws.send(json.dumps({"result": None, "id": request["id"]}))
            if request.get("method") == "SUBSCRIBE":  # data only ever flows on a subscribed connection
                self._ws = ws
                self.subscribed.set()

    async def send(self, frames: list[str | bytes]) -> None:
        assert self._ws is not None
        for frame in frames:
            await self._ws.send(frame)

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()


def rest_ok(request: httpx.Request) -> httpx.Response:
    """A well-behaved exchange's REST answers (server time at T0)."""
    path = request.url.path
    if path == "/fapi/v1/time":
        return httpx.Response(200, json={"serverTime": T0})
    if path == "/fapi/v1/exchangeInfo":
        return httpx.Response(200, json={"serverTime": T0, "symbols": [{"symbol": SYMBOL, "status": "TRADING"}]})
    if path == "/fapi/v1/klines":
        return httpx.Response(200, json=[])
    return httpx.Response(404, json={"code": -1, "msg": "no"})


def service_config(data: Path, ws_url: str, **changes: Any) -> Config:
    return Config().replace(**{
        "symbols": [SYMBOL], "websocket.base_url": ws_url, "websocket.rest_url": "http://exchange.invalid",
        "websocket.streams.kline_intervals": ["1m"], "websocket.streams.aggtrade": False,
        "websocket.streams.depth": False, "websocket.streams.mark_price": False,
        # Liveness is not under test: between examples the fake exchange may say nothing for long.
        "websocket.heartbeat.check_interval": 0.2, "websocket.heartbeat.timeout": 3600.0,
        "websocket.heartbeat.resubscribe_after": 3600.0,
        # Valid bars a minute apart, sent milliseconds apart: the exchange clock learns a rate of
        # thousands, and a day of its time (rotation) would pass in seconds.
        "websocket.rotate_after": MAX_SECONDS,  # the most a duration may be: 30 days, far beyond any example
        "websocket.reconnect.base_delay": 0.05, "websocket.reconnect.max_delay": 0.2,
        "storage.data_dir": str(data), "storage.flush_interval": 0.2, "storage.wal_fsync_window": 0.05,
        "jobs.status_interval": 0.1, "rest.retry_base_delay": 0.01, "rest.retry_max_delay": 0.02, **changes,
    })


class Harness:
    """The fake exchange and a started service on a loop thread; frames in, counters out."""

    def __init__(self, data: Path, transport: httpx.MockTransport | None = None, **changes: Any) -> None:
        self.lt = LoopThread()
        self.exchange = FakeExchange()
        self.transport = transport or httpx.MockTransport(rest_ok)
        url = self.lt.run(self.exchange.start())
        self.service = Service(service_config(data, url, **changes), transport=self.transport)
        self.lt.run(self._start())
        self.next_open = T0  # open time of the next valid bar
        self.sent: dict[int, dict[str, Any]] = {}  # valid bars sent, by open time
        self.bad = 0

    async def _start(self) -> None:
        await self.service.start()
        await asyncio.wait_for(self.exchange.subscribed.wait(), 10)
        await self._settle(lambda: self.service.feed.pool.connections[0].state.name == "SUBSCRIBED")

    @staticmethod
    async def _settle(check: Any, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError("timed out")
            await asyncio.sleep(0.005)

    def counted(self) -> int:
        feed = self.service.feed
        return sum(feed.state.rejected.values()) + feed.dispatcher.unexpected

    def send(self, frames: list[str | bytes]) -> None:
        """Send and wait until the service has handled every frame."""
        dispatcher = self.service.feed.dispatcher
        target = dispatcher.messages + len(frames)

        async def go() -> None:
            await self.exchange.send(frames)
            await self._settle(lambda: dispatcher.messages >= target)

        self.lt.run(go())

    def valid(self, values: dict[str, Any]) -> str:
        """The next valid closed bar's frame (open times advance a minute per bar)."""
        t = self.next_open
        self.next_open += MINUTE_MS
        k = {**values, "t": t, "T": t + MINUTE_MS - 1}
        self.sent[t] = k
        return frame(k)

    def close(self) -> None:
        try:
            self.lt.run(self.service.stop())
            self.lt.run(self.exchange.stop())
        finally:
            self.lt.close()


def frame(k: dict[str, Any], *, stream: str = STREAM, symbol: str = SYMBOL, event_ms: int | None = None) -> str:
    k = {"i": "1m", "x": True, "f": 1, "L": 2, "s": symbol, **k}
    event = event_ms if event_ms is not None else (k["T"] + 1 if isinstance(k.get("T"), int) else T0)
    return json.dumps({"stream": stream, "data": {"e": "kline", "E": event, "s": symbol, "k": k}})


# --- strategies ----------------------------------------------------------------------------------

decimal = st.decimals(min_value="0.00000001", max_value="100000", places=8, allow_nan=False).map(lambda d: f"{d:f}")


@st.composite
def bar_values(draw: st.DrawFn) -> dict[str, Any]:
    """Kline values that can be a bar (strings as Binance sends them)."""
    prices = sorted(float(draw(decimal)) for _ in range(4))
    low, a, b, high = prices
    o, c = draw(st.permutations([a, b]))
    v = float(draw(decimal))
    q = float(draw(decimal))
    return {"o": repr(o), "c": repr(c), "h": repr(high), "l": repr(low), "v": repr(v), "q": repr(q),
            "V": repr(v * draw(st.floats(0, 1))), "Q": repr(q * draw(st.floats(0, 1))), "n": draw(st.integers(0, 10**6))}


NOT_A_NUMBER = st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "1e400", "-1e400"])
WRONG_TYPE = st.sampled_from([None, [], {}, [1, 2], {"a": 1}, "abc", "", "1.2.3", "0x10"])
NON_POSITIVE = st.sampled_from(["0", "-0", "-1", "-0.00000001", "-1e10", 0, -5.5])
HUGE = {"price": ["1e15", "1e300", "9" * 400, 1e300, 10**30], "qty": ["1e18", "1e300", "9" * 400, 1e300, 10**30],
        "count": [2**63, 10**30, "9" * 400, 1e300]}  # beyond what any exchange sends, and beyond int64


Recipe = tuple[str, Any]  # (kind, a function of the next valid open time returning the frame)


@st.composite
def bad_frame(draw: st.DrawFn, values: dict[str, Any]) -> Recipe:
    """A frame the service must refuse, built on a bar that would be valid at the next open time.

    Draws never depend on the service's state (hypothesis replays them): times are offsets.
    """
    kind = draw(st.sampled_from([
        "truncated", "binary", "wrong_type", "missing", "not_a_number", "non_positive", "huge", "bare_nan",
        "inconsistent", "wrong_stream", "unknown_symbol", "future", "misaligned", "close_time", "huge_time",
        "negative_trades", "wrong_interval", "future_event",
    ]))

    def bar(open_ms: int, **changes: Any) -> dict[str, Any]:
        return {**values, "t": open_ms, "T": open_ms + MINUTE_MS - 1, **changes}

    if kind == "truncated":
        cut = draw(st.floats(0, 1, exclude_max=True))
        return kind, lambda t: (text := frame(bar(t)))[: max(1, int(len(text) * cut))]
    if kind == "binary":
        junk = b"\xff" + draw(st.binary(max_size=200))
        return kind, lambda t: junk
    if kind == "wrong_type":
        field = draw(st.sampled_from(KLINE_FIELDS))
        value = draw(WRONG_TYPE.filter(lambda v: not (field == "i" and isinstance(v, str))))
        return kind, lambda t: frame(bar(t, **{field: value}))
    if kind == "missing":
        field = draw(st.sampled_from(KLINE_FIELDS))
        def without(t: int) -> str:
            message = json.loads(frame(bar(t)))
            del message["data"]["k"][field]
            return json.dumps(message)

        return kind, without
    if kind == "not_a_number":
        field, value = draw(st.sampled_from(PRICES + QTYS)), draw(NOT_A_NUMBER)
        return kind, lambda t: frame(bar(t, **{field: value}))
    if kind == "non_positive":
        field = draw(st.sampled_from(PRICES + QTYS))
        value = draw(NON_POSITIVE.filter(lambda v: field in PRICES or str(v).startswith("-") and v != "-0"))  # -0 volume is 0
        return kind, lambda t: frame(bar(t, **{field: value}))
    if kind == "huge":
        field = draw(st.sampled_from(PRICES + QTYS + ("n",)))
        value = draw(st.sampled_from(HUGE["price" if field in PRICES else "qty" if field in QTYS else "count"]))
        return kind, lambda t: frame(bar(t, **{field: value}))
    if kind == "bare_nan":
        return kind, lambda t: frame(bar(t)).replace(f'"o": "{values["o"]}"', '"o": NaN')
    if kind == "inconsistent":
        changes = draw(st.sampled_from([{"h": repr(float(values["l"]) / 2)}, {"l": repr(float(values["h"]) * 2)},
                                        {"V": repr(float(values["v"]) * 3 + 1)}]))
        return kind, lambda t: frame(bar(t, **changes))
    if kind == "wrong_stream":
        stream = draw(st.sampled_from(["ethusdt@kline_1m", "BTCUSDT@kline_1m", "btcusdt@kline_5m", "btcusdt@aggTrade",
                                       "btcusdt@depth", "nonsense", "", "btcusdt@kline_1m/ethusdt@kline_1m"]))
        symbol = "ETHUSDT" if stream.startswith("eth") else SYMBOL
        return kind, lambda t: frame(bar(t), stream=stream, symbol=symbol)
    if kind == "unknown_symbol":
        symbol = draw(st.sampled_from(["FOOUSDT", "ETHUSDT", "btcusdt", "", "X" * 200]))
        return kind, lambda t: frame(bar(t), symbol=symbol)
    if kind == "future":  # aligned, well-formed, but opening long after the exchange's now
        ahead = draw(st.integers(10 * 1440, 2**52 // MINUTE_MS)) * MINUTE_MS
        return kind, lambda t: frame(bar(t + ahead))
    if kind == "future_event":  # refused for its high, but its event time is far ahead: the clock must not follow
        ahead = draw(st.integers(10 * 86_400_000, 2**52))
        return kind, lambda t: frame(bar(t, h=repr(float(values["l"]) / 2)), event_ms=t + ahead)
    if kind == "huge_time":
        field = draw(st.sampled_from(["t", "T", "E"]))
        value = draw(st.sampled_from([2**53 - 1, 2**53, 2**63, -1, -MINUTE_MS, 1e20, 253_402_300_800_000]))
        return kind, lambda t: frame(bar(t), event_ms=value) if field == "E" else frame(bar(t, **{field: value}))
    if kind == "misaligned":
        shift = draw(st.integers(1, MINUTE_MS - 1))
        return kind, lambda t: frame(bar(t + shift))
    if kind == "close_time":
        close = draw(st.sampled_from([MINUTE_MS, 2 * MINUTE_MS, -1]))
        return kind, lambda t: frame(bar(t, T=t + close))
    if kind == "negative_trades":
        n = draw(st.integers(-(2**40), -1))
        return kind, lambda t: frame(bar(t, n=n))
    interval = draw(st.sampled_from(["5m", "1h", "7m", "", "1M"]))
    return kind, lambda t: frame(bar(t, i=interval))


@st.composite
def batch(draw: st.DrawFn) -> list[Recipe]:
    """A run of ("valid", values) and bad-frame recipes, in the order they are sent."""
    out: list[Recipe] = []
    for _ in range(draw(st.integers(1, 12))):
        values = draw(bar_values())
        out.append(draw(bad_frame(values)) if draw(st.booleans()) else ("valid", values))
    return out


# --- the tests ------------------------------------------------------------------------------------


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "data")
    yield h
    h.close()


def examples(long_run: bool, n: int) -> int:
    return n * 10 if long_run else n


def test_bad_frames_are_counted_and_never_stored(harness: Harness, long_run: bool) -> None:
    kinds: dict[str, int] = {}
    history: list[tuple[str, Any]] = []
    before_writes = harness.service.status_writes

    @settings(max_examples=examples(long_run, 150), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        feed = harness.service.feed
        for kind, item in data.draw(batch()):
            text = harness.valid(item) if kind == "valid" else item(harness.next_open)
            counted, closed = harness.counted(), feed.dispatcher.closed
            harness.send([text])
            history.append((kind, text[:300]))
            if kind == "valid":
                assert (harness.counted(), feed.dispatcher.closed) == (counted, closed + 1), "\n".join(map(str, [
                    *history[-4:], dict(feed.state.rejected), f"held {feed.dispatcher.held}", f"now {feed.clock.now_ms()}"]))
            else:
                kinds[kind] = kinds.get(kind, 0) + 1
                harness.bad += 1
                assert (harness.counted(), feed.dispatcher.closed) == (counted + 1, closed), (kind, text)

    one()
    service, feed = harness.service, harness.service.feed
    harness.lt.run(service.flush())
    written = service.status_writes
    time.sleep(0.3)
    assert service.status_writes > max(written, before_writes), "status.json is no longer written"
    conn = feed.pool.connections[0]
    lost = [(e.conn_id, e.reason) for e in feed.events.since() if e.to_state == "LOST"]
    assert (conn.state.name, conn.internal_errors, harness.exchange.connections) == ("SUBSCRIBED", 0, 1), lost
    assert service.flush_failures == 0, service.last_flush_error
    stored = read_bars(service.data_dir, SYMBOL, "1m")
    assert sorted(int(t.timestamp() * 1000) for t in stored["open_time"]) == sorted(harness.sent)
    for row in stored.iter_rows(named=True):
        k = harness.sent[int(row["open_time"].timestamp() * 1000)]
        assert (row["open"], row["high"], row["low"], row["close"], row["volume"], row["quote_volume"], row["trades"],
                row["taker_buy_volume"], row["taker_buy_quote_volume"]) == (
            float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"]), float(k["q"]), k["n"],
            float(k["V"]), float(k["Q"]))
        assert all(math.isfinite(row[c]) and row[c] >= 0 for c in ("open", "high", "low", "close", "volume"))
    files = list((service.data_dir / "bars").rglob("*.parquet"))
    symbols = {s for p in files for s in pq.read_table(p, columns=["symbol"]).column("symbol").to_pylist()}
    assert symbols <= {SYMBOL}, symbols  # no bar of another symbol, any interval
    now = feed.clock.now_ms()
    assert now is not None and now < max(harness.sent) + 30 * 86_400_000, "a bad event time moved the exchange clock"
    rejected = sum(feed.state.rejected.values()) + feed.dispatcher.unexpected
    print(f"{sum(kinds.values()) + len(harness.sent)} frames: {len(harness.sent)} valid bars stored, {harness.bad} bad "
          f"frames, {rejected} counted ({dict(feed.state.rejected)}, unexpected {feed.dispatcher.unexpected}); "
          f"kinds {kinds}")


# --- REST -----------------------------------------------------------------------------------------

HTML = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
ENDPOINTS = ("/fapi/v1/time", "/fapi/v1/exchangeInfo", "/fapi/v1/klines", "/fapi/v1/depth")
RETRY_AFTER = st.sampled_from([None, "0", "1", "-1", "abc", "", "inf", "-inf", "nan", "1e308", "99999999999", "2.5"])
MAX_PAUSE_S = 3 * 86_400  # the exchange's longest ban


def valid_body(path: str, t: int) -> Any:
    if path == "/fapi/v1/time":
        return {"serverTime": t}
    if path == "/fapi/v1/exchangeInfo":
        return {"serverTime": t, "symbols": [{"symbol": SYMBOL, "status": "TRADING"}]}
    if path == "/fapi/v1/depth":
        return {"lastUpdateId": 5, "E": t, "T": t, "bids": [["1.0", "2"]], "asks": [["1.1", "0.5"]]}
    return [[t, "1.5", "2", "1", "1.7", "10", t + MINUTE_MS - 1, "15.5", 3, "4", "6", "0"]]


@st.composite
def rest_answer(draw: st.DrawFn) -> tuple[str, str, httpx.Response]:
    """(endpoint, kind, response): a garbled 200, an error page, or a 418/429 with some Retry-After."""
    path = draw(st.sampled_from(ENDPOINTS))
    kind = draw(st.sampled_from(["valid", "truncated", "wrong_type", "huge", "html", "empty", "status", "limited",
                                 "same_page"]))
    body = json.dumps(valid_body(path, T0))
    if kind == "truncated":
        return path, kind, httpx.Response(200, text=body[: draw(st.integers(0, len(body) - 1))])
    if kind == "wrong_type":
        junk = draw(st.sampled_from([None, [], {}, "abc", -1, 1.5, [[]], [["x"] * 12], {"serverTime": "soon"},
                                     {"symbols": 5}, {"lastUpdateId": [], "bids": {}, "asks": None}]))
        return path, kind, httpx.Response(200, json=junk)
    if kind == "huge":
        junk = draw(st.sampled_from([
            {"serverTime": 2**64}, {"serverTime": 1e300}, {"serverTime": 2**53 - 1}, [[2**70] * 12], {"lastUpdateId": 10**30, "bids": [], "asks": []},
            [[T0, "1e400", "2", "1", "1.7", "10", T0 + 59_999, "15.5", 3, "4", "6", "0"]],
            [[T0, "1.5", "2", "1", "1.7", "10", T0 + 59_999, "15.5", 2**63, "4", "6", "0"]],
            valid_body(path, T0) if path != "/fapi/v1/klines" else
            [[T0 + i * MINUTE_MS, "1.5", "2", "1", "1.7", "10", T0 + i * MINUTE_MS + 59_999, "15.5", 3, "4", "6", "0"]
             for i in range(20_000)],
        ]))
        return path, kind, httpx.Response(200, json=junk)
    if kind == "html":
        return path, kind, httpx.Response(draw(st.sampled_from([200, 403, 502, 503])), text=HTML,
                                          headers={"content-type": "text/html"})
    if kind == "empty":
        return path, kind, httpx.Response(draw(st.sampled_from([200, 204, 500])), content=b"")
    if kind == "status":
        status = draw(st.sampled_from([400, 401, 403, 404, 408, 409, 500, 502, 503, 504]))
        return path, kind, httpx.Response(status, json={"code": -1000, "msg": "An unknown error occurred."})
    if kind == "limited":
        status, retry_after = draw(st.sampled_from([418, 429])), draw(RETRY_AFTER)
        headers = {} if retry_after is None else {"Retry-After": retry_after}
        return path, kind, httpx.Response(status, json={"code": -1003, "msg": "Too many requests"}, headers=headers)
    if kind == "same_page":  # a server ignoring startTime: every page is the gap's first bar again
        return path, kind, httpx.Response(200, json=valid_body(path, GAP_START))
    return path, kind, httpx.Response(200, json=valid_body(path, T0))


GAP_START = T0 - 100 * MINUTE_MS


async def call(service: Service, path: str) -> Any:
    """The service's own use of ``path``: clock sync, listings refresh, a back-fill, a depth snapshot."""
    feed = service.feed
    if path == "/fapi/v1/time":
        return await feed.rest.server_time()
    if path == "/fapi/v1/exchangeInfo":
        return await feed.refresh_listings()
    if path == "/fapi/v1/depth":
        return await feed.rest.depth(SYMBOL, 1000)
    assert feed.backfill is not None
    from klinestore.ingest.klines import Gap
    return await feed.backfill.fill(Gap(SYMBOL, "1m", GAP_START, T0 - MINUTE_MS, "gap"))


def test_garbled_rest_answers_raise_the_clients_errors_and_store_nothing_bad(tmp_path: Path, long_run: bool) -> None:
    answers: list[httpx.Response] = []  # this example's answer, given to every request until the next

    def handler(request: httpx.Request) -> httpx.Response:
        if not answers or request.url.path not in ENDPOINTS:
            return rest_ok(request)
        return httpx.Response(answers[0].status_code, headers=answers[0].headers, content=answers[0].content)

    harness = Harness(tmp_path / "data", httpx.MockTransport(handler), **{
        "modes.websocket_only_klines": False, "modes.disable_rest_fallback": False, "rest.max_retries": 0,
        "rest.weight_limit": 10**9,  # thousands of calls in one exchange minute: the budget would (rightly) wait
        "websocket.cache.kline_1m_history": 50})
    outcomes: dict[str, int] = {}
    try:
        service, feed = harness.service, harness.service.feed

        @settings(max_examples=examples(long_run, 80), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(rest_answer())
        def one(answer: tuple[str, str, httpx.Response]) -> None:
            path, kind, response = answer
            answers[:] = [response]
            try:
                harness.lt.run(asyncio.wait_for(call(service, path), 10))
                outcome = "ok"
            except IngestError as exc:
                outcome = type(exc).__name__
            except TimeoutError:
                raise AssertionError(f"{path} answered {kind} ({response.status_code}): the call hangs") from None
            finally:
                answers.clear()
            outcomes[f"{kind} {outcome}"] = outcomes.get(f"{kind} {outcome}", 0) + 1
            paused = feed.rest.paused_until - time.monotonic()
            assert math.isfinite(feed.rest.paused_until) and paused <= MAX_PAUSE_S, (kind, response.headers, paused)
            feed.rest.paused_until = 0.0  # the next example should not wait out this one's pause
            now = feed.clock.now_ms()
            assert now is not None and now < T0 + 30 * 86_400_000, ("the clock left", kind, path)

        one()
        harness.lt.run(service.flush())
        written = service.status_writes
        time.sleep(0.3)
        assert service.status_writes > written, "status.json is no longer written"
        assert service.flush_failures == 0, service.last_flush_error
        stored = read_bars(service.data_dir, SYMBOL, "1m")
        assert stored.height == 0 or all(
            math.isfinite(v) and 0 < v < 1e15 for c in ("open", "high", "low", "close") for v in stored[c])
        assert stored.height == 0 or int(stored["trades"].max()) < 2**63
    finally:
        harness.close()
    print(f"REST answers: {sum(outcomes.values())}: {dict(sorted(outcomes.items()))}")


HOSTILE = ('{"stream": "btcusdt@kline_1m", "data": "x\n2024-05-01 00:00:00,000 CRITICAL klinestore: '
           'all funds moved\x1b[2J\x1b]0;owned\x07\u202e' + "A" * 10_000 + '"}')


def test_network_text_never_forges_a_log_line(harness: Harness) -> None:
    """Issue 14 case 5: a frame holding a newline, a fake timestamp and terminal escape codes
    is logged (it is malformed) as one escaped, capped line by the CLI's formatter."""
    import io
    import logging

    from klinestore.core.logtext import MAX_MESSAGE, OneLineFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        rejected = sum(harness.service.feed.state.rejected.values())
        harness.send([HOSTILE])
        assert sum(harness.service.feed.state.rejected.values()) == rejected + 1
    finally:
        root.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    hostile = [line for line in lines if "all funds moved" in line]
    assert len(hostile) == 1, lines  # one event, one line
    assert all(line.split()[2] != "CRITICAL" for line in lines)  # no forged event: the level is the real one
    assert "\x1b" not in stream.getvalue() and "\x07" not in stream.getvalue() and "\u202e" not in stream.getvalue()
    assert "\\x1b[2J" in hostile[0] and "\\n2024-05-01" in hostile[0]
    assert len(hostile[0]) < MAX_MESSAGE + 200
