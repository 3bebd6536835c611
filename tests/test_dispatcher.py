"""Frames to state: WAL first, then ring, then callbacks; bad frames counted, never fatal."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from time import monotonic

import pytest

from frames import T0, agg_trade, depth, kline, mark
from klinestore.config import Config
from klinestore.core.schema import Bar
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.dispatcher import Dispatcher
from klinestore.ingest.errors import ProtocolError
from klinestore.ingest.sink import BarSink, MemorySink
from klinestore.ingest.state import MarketState, UnknownSeries

M = 60_000


def make(sink: BarSink | None = None) -> tuple[Dispatcher, MarketState, MemorySink | BarSink]:
    clock = ExchangeClock()
    state = MarketState(Config().websocket.cache, clock)
    sink = sink or MemorySink()
    d = Dispatcher(state, sink, clock)
    for stream in ("btcusdt@kline_1m", "btcusdt@aggTrade", "btcusdt@depth@500ms", "btcusdt@markPrice@1s"):
        d.route(stream)
    return d, state, sink


def test_malformed_frames_are_counted_and_ingest_goes_on() -> None:
    d, state, sink = make()
    for raw in (b"{not json", b'{"stream":"btcusdt@kline_1m"}', b'{"stream":"btcusdt@kline_1m","data":{"e":"kline"}}',
                kline(o=-1.0)):
        assert d.dispatch(raw, monotonic()) is None
    assert d.dispatch(kline(t=T0, x=True), monotonic()) is not None
    assert state.rejected["malformed"] == 4 and len(sink.bars) == 1  # type: ignore[union-attr]


def test_bars_opening_long_after_exchange_now_are_refused_and_move_nothing() -> None:
    d, state, sink = make()
    d.dispatch(kline(t=T0, x=True), monotonic())
    future = T0 + 400 * 86_400_000  # well-formed, aligned, its own E consistent: but a year ahead
    d.dispatch(kline(t=future, x=True), monotonic())
    d.dispatch(kline(t=future), monotonic())  # as the open bar it would make every real update stale
    assert state.rejected["future"] == 2 and len(sink.bars) == 1  # type: ignore[union-attr]
    d.dispatch(kline(t=T0 + M), monotonic())
    series = state.series("BTCUSDT", "1m")
    assert series.open_bar is not None and series.open_bar.t == T0 + M and "stale" not in state.rejected
    d.dispatch(kline(t=T0 + M, x=True), monotonic())
    assert len(sink.bars) == 2  # type: ignore[union-attr]
    assert d.clock.now_ms() < T0 + 86_400_000  # type: ignore[operator]


def test_closed_bar_goes_to_the_sink_before_the_ring_and_callbacks() -> None:
    order: list[str] = []

    class Probe:
        def append(self, bars: Sequence[Bar]) -> None:
            order.append(f"sink ring={len(state.series('BTCUSDT', '1m').ring)}")

    d, state, _ = make(Probe())

    async def main() -> None:
        d.on_close.add(lambda bar: order.append(f"callback ring={len(state.series('BTCUSDT', '1m').ring)}"))
        d.dispatch(kline(t=T0, x=True), monotonic())
        d.dispatch(kline(t=T0, x=True), monotonic())  # a duplicate frame: nothing happens twice
        await d.on_close.drain()
        await d.on_close.close()

    asyncio.run(main())
    assert order == ["sink ring=0", "callback ring=1"]
    assert state.rejected["duplicate"] == 1


def test_bars_are_held_while_the_sink_fails_and_committed_in_order_once_it_recovers() -> None:
    class Flaky(MemorySink):
        failing = True

        def append(self, bars: Sequence[Bar]) -> None:
            if self.failing:
                raise OSError("disk full")
            super().append(bars)

    sink = Flaky()
    d, state, _ = make(sink)
    d.dispatch(kline(t=T0, x=True), monotonic())
    d.dispatch(kline(t=T0 + M, x=True), monotonic())
    series = state.series("BTCUSDT", "1m")
    assert len(series.ring) == 0 and d.held == 2 and d.sink_errors == 2
    sink.failing = False
    d.dispatch(kline(t=T0 + 2 * M, x=True), monotonic())
    assert [b.open_time for b in sink.bars] == [T0, T0 + M, T0 + 2 * M]
    assert list(series.ring.tail()["open_time"]) == [T0, T0 + M, T0 + 2 * M] and d.held == 0


def test_a_bar_the_sink_refuses_is_dropped_and_counted_without_blocking_the_rest() -> None:
    class Picky(MemorySink):
        def append(self, bars: Sequence[Bar]) -> None:
            if any(b.open_time == T0 + M for b in bars):
                raise ValueError("not a storable bar")
            super().append(bars)

    sink = Picky()
    d, state, _ = make(sink)
    for i in range(3):
        d.dispatch(kline(t=T0 + i * M, x=True), monotonic())
    assert [b.open_time for b in sink.bars] == [T0, T0 + 2 * M]
    assert state.rejected["sink_refused"] == 1 and d.held == 0 and d.sink_errors == 0
    assert list(state.series("BTCUSDT", "1m").ring.tail()["open_time"]) == [T0, T0 + 2 * M]


def test_every_stream_kind_reaches_its_state() -> None:
    wanted: list[str] = []
    d, state, _ = make()
    d._wants_snapshot = wanted.append  # noqa: SLF001 - the seam the feed wires
    d.dispatch(agg_trade(a=7, T=T0), monotonic())
    d.dispatch(mark(p=101.5, r="0.0002", E=T0), monotonic())
    d.dispatch(depth("BTCUSDT", 1, 2, 0, bids=[(100.0, 1.0)]), monotonic())
    d.dispatch(kline(t=T0, c=100.3), monotonic())
    assert state.trades["BTCUSDT"].last_id == 7
    m = state.mark("BTCUSDT")
    assert m is not None and (m.mark_price, m.funding_rate) == (101.5, 0.0002)
    assert wanted == ["BTCUSDT"] and state.book("BTCUSDT").needs_snapshot
    assert state.series("BTCUSDT", "1m").open_bar.c == 100.3  # type: ignore[union-attr]
    assert d.clock.synced


def test_unrouted_streams_are_counted_not_applied() -> None:
    d, state, _ = make()
    d.dispatch(kline("ETHUSDT", t=T0, x=True), monotonic())
    assert d.unexpected == 1 and ("ETHUSDT", "1m") not in state.klines
    with pytest.raises(UnknownSeries):
        state.bars("ETHUSDT", "1m")
    with pytest.raises(ProtocolError):
        d.route("btcusdt@bookTicker")


def test_a_warming_up_series_yields_an_empty_frame_never_a_wrong_one() -> None:
    d, state, _ = make()
    d.dispatch(kline(t=T0, x=True), monotonic())
    d.clock.sync(T0 + 3 * M + 5_000)  # two more bars should have closed by now
    assert state.bars("BTCUSDT", "1m").is_empty()
    assert state.warming_up() == [("BTCUSDT", "1m")]
    for i in (1, 2):
        d.dispatch(kline(t=T0 + i * M, x=True), monotonic())
    frame = state.bars("BTCUSDT", "1m")
    assert frame.height == 3 and state.warming_up() == []
    assert state.bars("BTCUSDT", "1m", min_bars=4).is_empty()
