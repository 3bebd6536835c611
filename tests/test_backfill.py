"""The REST back-fill: which bars it asks for and commits, page by page, and never the same page for ever."""

from __future__ import annotations

import asyncio

import httpx

from klinestore.config import Config
from klinestore.core.schema import Bar
from klinestore.ingest.backfill import Backfill
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.dispatcher import Dispatcher
from klinestore.ingest.klines import Gap
from klinestore.ingest.protocol.rest import RestKline
from klinestore.ingest.rest import RestClient
from klinestore.ingest.sink import MemorySink
from klinestore.ingest.state import MarketState

M = 60_000
T0 = 1_714_521_600_000


def row(i: int) -> RestKline:
    t = T0 + i * M
    return RestKline(t, 100.0, 101.0, 99.0, 100.5, 2.0, t + M - 1, 201.0, 5, 1.0, 100.5)


class FakeRest:
    """``/fapi/v1/klines`` over bars 0..``closed`` (closed) and the open bar after them."""

    def __init__(self, closed: int) -> None:
        self.closed = closed
        self.requests: list[tuple[int, int]] = []

    async def klines(self, symbol: str, interval: str, *, start_ms: int, end_ms: int, limit: int) -> list[RestKline]:
        self.requests.append((start_ms, end_ms))
        rows = [row(i) for i in range(self.closed + 2) if start_ms <= T0 + i * M <= end_ms]
        return rows[:limit]


def test_start_history_reaches_the_first_live_bar_that_came_before_it() -> None:
    """History asked for up to bar 14 at start; the live close of bar 16 arrived before it, bar 15
    closed while the connections subscribed: it is fetched too, or it would be lost unrecorded."""
    clock = ExchangeClock(rate=1.0)
    clock.sync(T0 + 17 * M + 5_000)
    state = MarketState(Config().websocket.cache, clock)
    dispatcher = Dispatcher(state, MemorySink(), clock)
    dispatcher.route("btcusdt@kline_1m")
    series = state.series("BTCUSDT", "1m")
    live = row(16)
    dispatcher.accept(series, [Bar("BTCUSDT", "1m", live.open_time, live.close_time, 100.0, 101.0, 99.0, 100.5, 2.0,
                                   201.0, 5, 1.0, 100.5, "ws", True)])
    rest = FakeRest(closed=16)
    backfill = Backfill(state, dispatcher, rest, clock)  # type: ignore[arg-type]

    filled = asyncio.run(backfill.fill(Gap("BTCUSDT", "1m", T0, T0 + 14 * M, "start")))

    assert filled == 16 and rest.requests == [(T0, T0 + 14 * M), (T0 + 15 * M, T0 + 15 * M)]
    assert series.contiguous_count() == len(series.ring) == 17


def test_a_gap_between_bars_is_fetched_as_reported() -> None:
    clock = ExchangeClock(rate=1.0)
    clock.sync(T0 + 30 * M)
    state = MarketState(Config().websocket.cache, clock)
    dispatcher = Dispatcher(state, MemorySink(), clock)
    dispatcher.route("btcusdt@kline_1m")
    series = state.series("BTCUSDT", "1m")
    rest = FakeRest(closed=28)
    backfill = Backfill(state, dispatcher, rest, clock)  # type: ignore[arg-type]
    asyncio.run(backfill.fill(Gap("BTCUSDT", "1m", T0, T0 + 3 * M, "start")))
    dispatcher.accept(series, [Bar("BTCUSDT", "1m", T0 + 9 * M, T0 + 10 * M - 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, "ws", True)])

    assert asyncio.run(backfill.fill(Gap("BTCUSDT", "1m", T0 + 4 * M, T0 + 5 * M, "gap"))) == 2
    assert rest.requests[-1] == (T0 + 4 * M, T0 + 5 * M)  # only what was reported: the rest is its own gap


def wire_row(t: int) -> list[object]:
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
        return httpx.Response(200, json=[wire_row(t) for t in range(start, min(end, start + 2 * M) + 1, M)])

    filled, sink, calls = fill(handler, Gap("BTCUSDT", "1m", T0, T0 + 9 * M, "gap"))
    assert filled == 10 and len(sink.bars) == 10 and calls == 4  # 3 bars a page


def test_a_server_that_ignores_start_time_does_not_loop_the_back_fill_for_ever() -> None:
    # Every page is the gap's first bar again: the next start never moved, and fill() asked again, for ever.
    filled, sink, calls = fill(lambda request: httpx.Response(200, json=[wire_row(T0)]), Gap("BTCUSDT", "1m", T0, T0 + 9 * M, "gap"))
    assert filled == 1 and len(sink.bars) == 1 and calls == 2
