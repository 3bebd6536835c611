"""The REST client: weight budget, 429/418, retries, ledger, the klines guard (network replaced by httpx)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from klinestore.config import Config
from klinestore.ingest.budget import Priority, WeightBudget
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.errors import Banned, RestError
from klinestore.ingest.ledger import ApiLedger
from klinestore.ingest.rest import RestClient

REST = Config().rest.__class__(retry_base_delay=0.01, retry_max_delay=0.05, max_retries=3, timeout=1.0)
DEPTH = {"lastUpdateId": 5, "E": 1, "T": 1, "bids": [["100.0", "1"]], "asks": [["101.0", "2"]]}


def client(handler, *, rest=REST, clock: ExchangeClock | None = None, allow_klines: bool = False) -> RestClient:  # noqa: ANN001
    clock = clock or ExchangeClock()
    if not clock.synced:
        clock.sync(1_700_000_000_000)
    return RestClient("http://exchange.test", rest, clock, allow_klines=allow_klines,
                      transport=httpx.MockTransport(handler))


def test_budget_reserves_before_sending_and_waits_for_the_next_minute() -> None:
    budget = WeightBudget(100, 0.25)
    now = 1_700_000_010_000 - 1_700_000_010_000 % 60_000 + 10_000
    assert [budget.reserve(20, now) for _ in range(3)] == [0, 0, 0]
    assert budget.reserve(20, now) == 50_000  # 75 usable: wait for the next minute
    budget.observe(90, now - 10_000)  # the exchange counted more (another process on the IP)
    assert budget.remaining(now) == 0
    assert budget.reserve(20, now + 50_000) == 0 and budget.used == 20


def test_a_429_pauses_every_request_for_retry_after_then_retries() -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "0.3"}, json={"code": -1003, "msg": "too many"})
        return httpx.Response(200, json=DEPTH, headers={"X-MBX-USED-WEIGHT-1M": "40"})

    async def main() -> None:
        rest = client(handler)
        first, second = await asyncio.gather(rest.depth("BTCUSDT"), _later(rest.depth("ETHUSDT")))
        assert first.lastUpdateId == second.lastUpdateId == 5
        assert rest.rate_limited == 1
        assert calls[1] - calls[0] >= 0.29 and calls[2] - calls[0] >= 0.29  # nobody sent during the pause
        assert rest.ledger.totals()["/fapi/v1/depth"] == {"calls": 3, "weight": 60, "errors": {"429": 1}}
        await rest.aclose()

    asyncio.run(main())


def test_a_418_is_never_retried_and_stops_everyone() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(418, headers={"Retry-After": "0.2"})

    async def main() -> None:
        rest = client(handler)
        with pytest.raises(Banned):
            await rest.exchange_info()
        assert calls == 1 and rest.paused_until > time.monotonic()
        await rest.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(("retry_after", "pause"), [("inf", 120.0), ("nan", 120.0), ("-5", 120.0), ("soon", 120.0),
                                                   ("1e308", 3 * 86_400.0), ("99999999999", 3 * 86_400.0), ("7", 7.0)])
def test_a_retry_after_pauses_at_most_the_longest_ban(retry_after: str, pause: float) -> None:
    # "inf" or "1e308" (a broken proxy) used to pause every request for ever: no more snapshots or back-fills.
    async def main() -> None:
        rest = client(lambda request: httpx.Response(418, headers={"Retry-After": retry_after}))
        with pytest.raises(Banned):
            await rest.exchange_info()
        assert abs(rest.paused_until - time.monotonic() - pause) < 1.0
        await rest.aclose()

    asyncio.run(main())


def test_server_errors_and_transport_errors_are_retried_client_errors_are_not() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/fapi/v1/time":
            if seen.count("/fapi/v1/time") < 3:
                return httpx.Response(503)
            return httpx.Response(200, json={"serverTime": 1_700_000_123_456})
        if request.url.path == "/fapi/v1/ping":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(400, json={"code": -1121, "msg": "Invalid symbol."})

    async def main() -> None:
        clock = ExchangeClock()
        rest = client(handler, clock=clock)
        assert await rest.server_time() == 1_700_000_123_456 and abs(clock.now_ms() - 1_700_000_123_456) < 1000
        with pytest.raises(RestError, match="-1121: Invalid symbol") as bad:
            await rest.depth("NOPEUSDT")
        assert bad.value.status == 400
        with pytest.raises(RestError, match="ConnectError") as down:
            await rest.get("/fapi/v1/ping")
        assert down.value.status == 0
        assert seen.count("/fapi/v1/depth") == 1 and seen.count("/fapi/v1/ping") == 4
        assert rest.retries == 2 + 3
        await rest.aclose()

    asyncio.run(main())


def test_websocket_only_mode_refuses_rest_klines_without_sending() -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return httpx.Response(200, json=[])

    async def main() -> None:
        rest = client(handler)
        with pytest.raises(RestError, match="websocket_only"):
            await rest.klines("BTCUSDT", "1m")
        fallback = client(handler, allow_klines=True)
        assert await fallback.klines("BTCUSDT", "1m", start_ms=0, limit=10) == []
        assert sent == ["/fapi/v1/klines"] and rest.ledger.totals() == {}
        await rest.aclose()
        await fallback.aclose()

    asyncio.run(main())


def test_the_budget_holds_under_load_and_the_ledger_has_per_minute_rows() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps(DEPTH).encode())

    async def main() -> None:
        clock = ExchangeClock(rate=600.0)  # an exchange minute passes in 0.1 s
        clock.sync(1_700_000_040_000)
        rest = client(handler, rest=REST.__class__(weight_limit=40, weight_margin=0.25), clock=clock)
        await asyncio.gather(*(rest.depth("BTCUSDT", limit=50) for _ in range(20)))  # 2 each, 30 usable
        rows = rest.ledger.rows()
        assert sum(calls for _, _, calls, _ in rows) == 20
        assert all(weight <= 30 for _, _, _, weight in rows) and len(rows) >= 2
        assert rest.budget.waits >= 1
        await rest.aclose()

    asyncio.run(main())


def test_ledger_keeps_a_bounded_number_of_minutes() -> None:
    ledger = ApiLedger(keep_minutes=3)
    for minute in range(10):
        ledger.record("/fapi/v1/depth", 20, minute * 60_000, 200)
    assert [m for m, *_ in ledger.rows()] == [6 * 60_000, 7 * 60_000, 8 * 60_000, 9 * 60_000]
    assert ledger.totals()["/fapi/v1/depth"]["calls"] == 10


async def _later(coro):  # noqa: ANN001, ANN202
    await asyncio.sleep(0.05)
    return await coro


def test_a_book_out_of_sync_is_served_before_a_periodic_check_when_the_budget_is_short() -> None:
    """Issue 12: snapshots queue through the budget by priority; a check never delays a resync."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.params["symbol"])
        return httpx.Response(200, json=DEPTH)

    async def main() -> None:
        clock = ExchangeClock()
        clock.sync(1_700_000_040_000 - 1_700_000_040_000 % 60_000 + 59_800)  # 0.2 s before a minute ends
        rest = client(handler, rest=Config().rest.__class__(weight_limit=40, weight_margin=0.0), clock=clock)
        await asyncio.gather(rest.depth("A"), rest.depth("B"))  # 40 of 40: the minute is spent
        check = asyncio.create_task(rest.depth("CHECK", 5, priority=Priority.CHECK))
        await asyncio.sleep(0.02)  # the check waits first ...
        await rest.depth("SYNC", 1000, priority=Priority.SYNC)  # ... the resync still goes first
        await check
        await rest.aclose()

    asyncio.run(main())
    assert sent == ["A", "B", "SYNC", "CHECK"]
