"""REST back-fill: pages until the gap is covered, and never asks for the same page for ever."""

from __future__ import annotations

import asyncio

import httpx

from ingest.backfill import Backfill
from ingest.clock import ExchangeClock
from ingest.dispatcher import Dispatcher
from ingest.klines import Gap
from ingest.rest import RestClient
from ingest.sink import MemorySink
from ingest.state import MarketState
from klinestore.config import Config

T0 = 1_714_521_600_000
M = 60_000


def row(t: int) -> list[object]:
    return [t, "1.5", "2", "1", "1.7", "10", t + M - 1, "15.5", 3, "4", "6", "0"]


def fill(handler, gap: Gap) -> tuple[int, MemorySink, int]:  # noqa: ANN001
    clock = ExchangeClock()
    clock.sync(T0 + 1000 * M)
    state, sink = MarketState(Config().websocket.cache, clock), MemorySink()
    dispatcher = Dispatcher(state, sink, clock)
    dispatcher.route("btcusdt@kline_1m")
    calls = 0

    def counted(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return handler(request)

    rest = RestClient("http://exchange.test", Config().rest, clock, allow_klines=True,
                      transport=httpx.MockTransport(counted))

    async def main() -> int:
        try:
            return await asyncio.wait_for(Backfill(state, dispatcher, rest, clock).fill(gap), 5)
        finally:
            await rest.aclose()

    return asyncio.run(main()), sink, calls


def test_a_gap_is_filled_page_by_page() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        start, end = int(request.url.params["startTime"]), int(request.url.params["endTime"])
        return httpx.Response(200, json=[row(t) for t in range(start, min(end, start + 2 * M) + 1, M)])

    filled, sink, calls = fill(handler, Gap("BTCUSDT", "1m", T0, T0 + 9 * M, "gap"))
    assert filled == 10 and len(sink.bars) == 10 and calls == 4  # 3 bars a page


def test_a_server_that_ignores_start_time_does_not_loop_the_back_fill_for_ever() -> None:
    # Every page is the gap's first bar again: the next start never moved, and fill() asked again, for ever.
    filled, sink, calls = fill(lambda request: httpx.Response(200, json=[row(T0)]), Gap("BTCUSDT", "1m", T0, T0 + 9 * M, "gap"))
    assert filled == 1 and len(sink.bars) == 1 and calls == 2
