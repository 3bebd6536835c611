"""The gateway's parts without sockets: its config rules, the weight budget, the token check,
the klines window at a bar's close, and the fan-out's bounds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from klinestore.config import Config
from klinestore.core.errors import ConfigError
from klinestore.gateway.budget import WeightBudget
from klinestore.gateway.exchangeinfo import ExchangeInfoCache
from klinestore.gateway.fanout import CLOSE_OVERLOAD, Fanout
from klinestore.gateway.klines import KlineRows
from klinestore.gateway.rest import GatewayRest
from klinestore.gateway.series import Piece, _complete, _fold
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.protocol.http import Request
from klinestore.ingest.recent import RecentRows
from klinestore.ingest.state import MarketState
from klinestore.storage import Dataset, funding_row

TOKEN = "s3cret-token-0123456789"


def test_a_non_loopback_bind_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="gateway.token.*0.0.0.0"):
        Config().replace(**{"gateway.host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="gateway.token.*16"):
        Config().replace(**{"gateway.host": "0.0.0.0", "gateway.token": "short"})
    assert Config().replace(**{"gateway.host": "0.0.0.0", "gateway.token": TOKEN}).gateway.token == TOKEN
    assert Config().gateway.host == "127.0.0.1" and not Config().gateway.enabled


def test_the_weight_budget_is_per_client_and_per_minute() -> None:
    now = [120.0]
    budget = WeightBudget(10, clock=lambda: now[0])
    assert budget.charge("a", 6).ok and not budget.charge("a", 5).ok
    refused = budget.charge("a", 5)
    assert refused.used == 6 and refused.retry_after == 60 and budget.refused == 2
    assert budget.charge("b", 10).ok  # another client is not starved by the first
    now[0] = 180.5  # the next minute
    assert budget.charge("a", 10).ok


def rest(tmp_path: Path, token: str = "") -> GatewayRest:
    config = Config()
    clock = ExchangeClock()
    info = ExchangeInfoCache(lambda: asyncio.sleep(0, b"{}"))  # never refreshed here: no exchangeInfo yet
    return GatewayRest(MarketState(config.websocket.cache, clock), info, KlineRows(Dataset(tmp_path)),
                       WeightBudget(100), now_ms=lambda: 1_714_521_600_000, token=token)


def ask(gw: GatewayRest, path: str, headers: dict[str, str] | None = None, **query: str) -> tuple[int, object]:
    request = Request("GET", path, {k: [v] for k, v in query.items()}, headers or {}, b"", "10.0.0.9:5555")
    response = asyncio.run(gw.handle(request))
    return response.status, json.loads(response.body)


def test_a_token_is_required_when_set(tmp_path: Path) -> None:
    gw = rest(tmp_path, TOKEN)
    assert ask(gw, "/fapi/v1/ping") == (401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
    assert ask(gw, "/fapi/v1/ping", {"authorization": "Bearer wrong"})[0] == 401
    assert ask(gw, "/fapi/v1/ping", {"authorization": f"Bearer {TOKEN}"}) == (200, {})
    assert gw.unauthorized == 2


def test_what_the_service_does_not_ingest_is_refused_naming_it(tmp_path: Path) -> None:
    gw = rest(tmp_path)
    status, body = ask(gw, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m")
    assert status == 400 and body == {"code": -1121, "msg": "klinestore gateway does not ingest BTCUSDT 1m klines."}
    assert ask(gw, "/fapi/v1/depth", symbol="BTCUSDT")[1] == {
        "code": -1121, "msg": "klinestore gateway does not ingest the depth of BTCUSDT."}
    assert ask(gw, "/fapi/v1/exchangeInfo")[0] == 503
    assert ask(gw, "/fapi/v1/aggTrades", symbol="BTCUSDT") == (
        404, {"code": -5000, "msg": "Path /fapi/v1/aggTrades, Method GET is invalid"})


class Client:
    def __init__(self) -> None:
        self.combined = True
        self.subscriptions: list[str] = []
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def push(self, data: bytes) -> bool:
        self.sent.append(data)
        return True

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def test_the_tap_is_installed_only_while_someone_listens_and_the_queue_is_bounded() -> None:
    taps: list[object] = []

    async def scenario() -> None:
        fan = Fanout(taps.append, queue_frames=16)
        client = Client()
        fan.subscribe(client, ["btcusdt@kline_1m"])
        assert taps[-1] == fan.tap
        fan.tap("ethusdt@kline_1m", b"{}")  # nobody wants it: not even queued
        for i in range(17):
            fan.tap("btcusdt@kline_1m", b'{"stream":"btcusdt@kline_1m","data":{"i":%d}}' % i)
        assert client.closed == CLOSE_OVERLOAD and fan.overloads == 1 and taps[-1] is None

    asyncio.run(scenario())


def test_a_frame_that_cannot_be_passed_on_is_counted_and_the_fanout_goes_on() -> None:
    async def scenario() -> None:
        fan = Fanout(lambda tap: None, queue_frames=16)
        client = Client()
        client.combined = False  # the bare event must be cut out of the envelope
        fan.subscribe(client, ["btcusdt@kline_1m"])
        task = asyncio.create_task(fan.run())
        fan.tap("btcusdt@kline_1m", b"not json")
        fan.tap("btcusdt@kline_1m", b'{"stream":"btcusdt@kline_1m","data":{"e":"kline"}}')
        for _ in range(100):
            if client.sent:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        assert fan.bad_frames == 1 and len(client.sent) == 1 and client.sent[0].endswith(b'{"e":"kline"}')

    asyncio.run(scenario())


def test_connections_past_the_cap_get_503_and_are_closed() -> None:
    from klinestore.ingest.protocol.http import HttpServer, Response

    async def ok(request: Request) -> Response:
        return Response.json(200, {})

    async def scenario() -> None:
        server = HttpServer(ok, "127.0.0.1", 0, max_connections=1)
        await server.start()
        try:
            first = await asyncio.open_connection("127.0.0.1", server.port)
            first[1].write(b"GET /fapi/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await first[0].readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")  # held open (keep-alive)
            second = await asyncio.open_connection("127.0.0.1", server.port)
            answer = await asyncio.wait_for(second[0].read(), 5)  # read to EOF: answered, then closed
            assert answer.startswith(b"HTTP/1.1 503") and b'"code":-1003' in answer and server.refused == 1
            first[1].close()
            second[1].close()
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_recent_rows_are_kept_until_a_flush_begun_after_them_succeeds() -> None:
    """The service checkpoints before a flush and trims after it: rows added while it ran stay."""
    recent = RecentRows(max_rows=3)
    recent.extend("funding", [funding_row("BTCUSDT", t, 0.0001, 1.0) for t in (1, 2)])
    checkpoint = recent.checkpoint()
    recent.extend("funding", [funding_row("BTCUSDT", 3, 0.0001, 1.0), funding_row("ETHUSDT", 3, 0.0001, 1.0)])
    recent.trim(checkpoint)
    assert [r.open_time for r in recent.rows("funding", "BTCUSDT")] == [3]
    assert len(recent.rows("funding", "ETHUSDT")) == 1 and recent.rows("mark", "BTCUSDT") == []
    recent.extend("funding", [funding_row("BTCUSDT", t, 0.0001, 1.0) for t in (4, 5, 6)])
    assert [r.open_time for r in recent.rows("funding", "BTCUSDT")] == [4, 5, 6] and recent.dropped == 1


def test_price_buckets_are_served_only_when_every_second_was_sampled() -> None:
    minute = 60_000
    pieces = [Piece(t * minute, 10.0 + t, 20.0 + t, 5.0, 11.0 + t, 60) for t in range(6)]
    pieces[4] = pieces[4]._replace(seconds=59)  # a second the stream missed
    pieces.append(Piece(6 * minute, 1.0, 30.0, 0.5, 2.0, 12))  # the minute being built
    folded = _fold(pieces, "3m")
    assert [(b.open_time, b.open, b.high, b.low, b.close, b.seconds) for b in folded] == [
        (0, 10.0, 22.0, 5.0, 13.0, 180), (3 * minute, 13.0, 25.0, 5.0, 16.0, 179),
        (6 * minute, 1.0, 30.0, 0.5, 2.0, 12)]
    kept = _complete(folded, "3m", now=6 * minute + 12_500)
    assert [b.open_time for b in kept] == [0, 6 * minute]  # the one with a hole is missing, the open one served
    # the open bucket with a missed minute is not served either
    assert _complete([Piece(0, 1, 1, 1, 1, 60 + 5)], "3m", now=2 * minute + 5_000) == []


def test_a_short_book_serves_the_levels_it_knows_and_refuses_a_deeper_answer(tmp_path: Path) -> None:
    """A 20-level book whose asks were taken down to 6 known levels (the price walked toward the
    snapshot's edge): limit 5 is exact and served; limit 10 would need unseen levels, so 503."""
    from klinestore.gateway.klines import Decimals
    from klinestore.ingest.orderbook import OrderBook
    from klinestore.ingest.protocol.events import DepthUpdateEvent
    from klinestore.ingest.protocol.rest import DepthSnapshot

    gw = rest(tmp_path)
    gw.info.decimals["BTCUSDT"] = Decimals(1, 3)
    book = gw.state.books["BTCUSDT"] = OrderBook("BTCUSDT", max_levels=20)

    def diff(u: int, asks: list[tuple[float, float]]) -> DepthUpdateEvent:
        return DepthUpdateEvent(E=u, T=u, s="BTCUSDT", U=u, u=u, pu=u - 1, b=[], a=asks)

    book.on_event(diff(1, []))
    book.on_snapshot(DepthSnapshot(lastUpdateId=1, bids=[(100.0 - i, 1.0) for i in range(20)],
                                   asks=[(101.0 + i, 1.0) for i in range(20)]))
    book.on_event(diff(2, [(101.0 + i, 0.0) for i in range(14)]))  # 6 asks known: short (fewer than 10)
    assert book.synced and book.asks.short and book.refresh_wanted
    status, body = ask(gw, "/fapi/v1/depth", symbol="BTCUSDT", limit="5")
    assert status == 200 and body["asks"] == [[f"{115.0 + i:.1f}", "1.000"] for i in range(5)]  # type: ignore[index]
    assert body["bids"][0] == ["100.0", "1.000"] and len(body["bids"]) == 5  # type: ignore[index]
    status, body = ask(gw, "/fapi/v1/depth", symbol="BTCUSDT", limit="10")
    assert status == 503 and "resyncing" in body["msg"]  # type: ignore[index]
