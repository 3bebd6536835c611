"""Frames to state: the hot path.

One lookup routes a frame by its stream name to a bound handler registered when the stream
was subscribed; there is no per-message dict building, string parsing or logging. A frame
that does not decode is counted (``rejected["malformed"]``) and logged at most every few
seconds; it is never fatal.

Every closed bar goes sink first (the WAL: durable before anything acknowledges it), then
the ring buffer, then the ``on_kline_close`` callbacks. If the sink raises, the bar is held
back (bounded, counted) and retried with the next bar; it reaches the ring and the
callbacks only once it is durable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from klinestore.core.schema import Bar
from klinestore.ingest.clock import MAX_LEAD_MS, ExchangeClock
from klinestore.ingest.errors import ProtocolError
from klinestore.ingest.hooks import Hook
from klinestore.ingest.klines import KlineSeries, kline_bar
from klinestore.ingest.liveness import Activity
from klinestore.ingest.markbars import MarkSeriesOut
from klinestore.ingest.orderbook import OrderBook
from klinestore.ingest.protocol.events import (
    AggTradeEvent,
    DepthUpdateEvent,
    Frame,
    KlineEvent,
    MarkPriceEvent,
    decode_frame,
)
from klinestore.ingest.protocol.streams import parse_stream
from klinestore.ingest.sink import BarSink
from klinestore.ingest.state import MarketState
from klinestore.ingest.throttle import LogThrottle
from klinestore.ingest.trades import TradeWindow

log = logging.getLogger(__name__)

#: Closed bars held back while the sink fails, before the oldest are dropped (and counted).
MAX_HELD = 100_000


class Dispatcher:
    """Decodes frames and applies them to :class:`MarketState`; closed bars go sink → ring → callbacks."""

    def __init__(
        self,
        state: MarketState,
        sink: BarSink,
        clock: ExchangeClock,
        *,
        on_close: Hook | None = None,
        on_book_wants_snapshot: Callable[[str], None] | None = None,
        activity: Activity | None = None,
        series: MarkSeriesOut | None = None,
    ) -> None:
        self.state = state
        self.series = series  # mark/index bars and funding to storage, when it keeps them
        self.sink = sink
        self.clock = clock
        self.on_close = on_close if on_close is not None else Hook("on_kline_close")
        self._wants_snapshot = on_book_wants_snapshot or (lambda symbol: None)
        self._routes: dict[str, tuple[Callable[[Any, Any], None], Any]] = {}
        self._held: list[Bar] = []
        self.activity = activity if activity is not None else Activity()
        self._mono = 0.0  # arrival time of the frame being applied
        self._log = LogThrottle(log)
        self.messages = 0  # data frames and replies received
        self.unexpected = 0  # frames of streams with no route (e.g. just unsubscribed)
        self.closed = 0  # closed bars committed
        self.sink_errors = 0
        self.sink_dropped = 0
        #: Called with (stream, raw frame) after a routed frame is applied, while someone listens
        #: (the gateway's fan-out); None costs the hot path one attribute test.
        self.tap: Callable[[str, bytes | str], None] | None = None

    # --- routes -------------------------------------------------------------------------------

    def route(self, stream: str) -> None:
        """Send frames of ``stream`` to its state (creating the series/window/book)."""
        name = parse_stream(stream)
        if name.kind == "kline":
            self._routes[stream] = (self._on_kline, self.state.add_series(name.symbol, name.interval or ""))
        elif name.kind == "aggTrade":
            self._routes[stream] = (self._on_trade, self.state.add_trades(name.symbol))
        elif name.kind == "depth":
            self._routes[stream] = (self._on_depth, self.state.add_book(name.symbol))
        elif name.kind == "markPrice":
            self._routes[stream] = (self._on_mark, None)
        else:
            raise ProtocolError(f"no handler for {name.kind} streams ({stream})")

    def unroute(self, stream: str) -> None:
        self._routes.pop(stream, None)

    def routes(self) -> list[str]:
        return list(self._routes)

    def routed(self, stream: str) -> bool:
        """True if frames of ``stream`` are applied (the service ingests it)."""
        return stream in self._routes

    # --- the hot path ---------------------------------------------------------------------------

    def dispatch(self, raw: bytes | str, mono: float) -> Frame | None:
        """Apply one frame; return it (control replies included), or None if it was malformed."""
        self.messages += 1
        try:
            frame = decode_frame(raw)
        except ProtocolError as exc:
            self.state.rejected["malformed"] += 1
            self._log.warning("malformed", "malformed frame dropped: %s", exc)
            return None
        stream = frame.stream
        if stream is None:
            return frame
        route = self._routes.get(stream)
        if route is None:
            self.unexpected += 1
            return frame
        data = frame.data
        self.clock.observe(data.E, mono)  # type: ignore[union-attr] - routed streams carry one event
        self._mono = mono
        route[0](route[1], data)
        tap = self.tap
        if tap is not None:
            tap(stream, raw)
        return frame

    def _on_kline(self, series: KlineSeries, ev: KlineEvent) -> None:
        k = ev.k
        ob = series.open_bar
        if k.x or ob is None or k.t != ob.t:  # a bar not held yet (updates of the held one were checked)
            now = self.clock.now_ms()
            if now is not None and k.t > now + MAX_LEAD_MS:
                # Opens long after exchange-now: stored, it would be a bar from the future; as the
                # open bar, every real update after it would look stale.
                self.state.rejected["future"] += 1
                return
        if k.n > (ob.n if ob is not None and ob.t == k.t else 0):  # trades happened: evidence for liveness
            self.activity.kline_trades[series.symbol] = self._mono
        if k.x:
            self.accept(series, (kline_bar(ev.s, k),))
        else:
            series.update_open(k, ev.E)

    def _on_trade(self, window: TradeWindow, ev: AggTradeEvent) -> None:
        window.add(ev)
        if self.series is not None:
            self.series.on_trade(ev)
        self.activity.agg_trades[window.symbol] = self._mono

    def _on_depth(self, book: OrderBook, ev: DepthUpdateEvent) -> None:
        book.on_event(ev)
        if book.refresh_wanted or book.needs_snapshot:
            self._wants_snapshot(book.symbol)

    def _on_mark(self, _: None, ev: MarkPriceEvent) -> None:
        self.state.marks.update(ev)
        if self.series is not None:
            self.series.on_mark(ev)

    # --- closed bars --------------------------------------------------------------------------

    def accept(self, series: KlineSeries, bars: Iterable[Bar]) -> list[Bar]:
        """Commit closed bars of one series: check, persist (WAL), ring, callbacks.

        Used for live closes and REST back-fills alike; returns the bars committed.
        """
        if not isinstance(bars, tuple) or len(bars) != 1:  # a batch: in order, one bar per open time
            bars = tuple({b.open_time: b for b in sorted(bars, key=lambda b: b.open_time)}.values())
        checked = [(bar, v) for bar in bars if (v := series.check_close(bar)) in ("append", "insert")]
        if not checked:
            return []
        durable = self._persist([bar for bar, _ in checked])
        checked = [(bar, verdict) for bar, verdict in checked if id(bar) in durable]
        inserts = [bar for bar, verdict in checked if verdict == "insert"]
        appends = [bar for bar, verdict in checked if verdict == "append"]
        if inserts:
            series.insert(inserts, checked=True)  # one merge for a whole back-fill
        for bar in appends:
            series.commit_close(bar, "append")
        committed = inserts + appends
        for bar in committed:
            self._committed(bar)
        return committed

    def _committed(self, bar: Bar) -> None:
        self.closed += 1
        self.on_close.emit(bar)

    def _commit(self, series: KlineSeries, bar: Bar, verdict: str) -> None:
        series.commit_close(bar, verdict)
        self._committed(bar)

    def _persist(self, bars: Sequence[Bar]) -> set[int]:
        """Hand bars (after any held back) to the sink; return the ids of ``bars`` now durable.

        A bar the sink refuses as invalid (a ``ValueError``, like storage's ``BarError``) is
        dropped and counted (``rejected["sink_refused"]``) so it cannot block the bars behind
        it; any other failure holds the bars back for the next attempt. Held bars that become
        durable are committed here, in order, before the new ones.
        """
        held, self._held = self._held, []
        batch = [*held, *bars]
        try:
            self.sink.append(batch)
            durable = batch
        except ValueError:
            durable = self._isolate(batch)
        except Exception as exc:  # noqa: BLE001 - the sink is storage's; whatever else it raises, hold the bars
            self._hold(batch, exc)
            return set()
        kept = {id(bar) for bar in durable}
        for bar in held:
            if id(bar) in kept:
                series = self.state.klines.get((bar.symbol, bar.interval))
                if series is not None and (verdict := series.check_close(bar)) in ("append", "insert"):
                    self._commit(series, bar, verdict)
        return kept

    def _isolate(self, batch: list[Bar]) -> list[Bar]:
        """The sink refused the batch as invalid: append bar by bar and drop the ones it refuses."""
        durable: list[Bar] = []
        for i, bar in enumerate(batch):
            try:
                self.sink.append((bar,))
            except ValueError as exc:
                self.state.rejected["sink_refused"] += 1
                self._log.warning("sink_refused", "sink refused %s %s %d: %s", bar.symbol, bar.interval,
                                  bar.open_time, exc)
            except Exception as exc:  # noqa: BLE001 - the sink went down half-way: hold the rest
                self._hold(batch[i:], exc)
                break
            else:
                durable.append(bar)
        return durable

    def _hold(self, bars: list[Bar], exc: BaseException) -> None:
        self.sink_errors += 1
        self._log.log(logging.ERROR, "sink", "closed bars not durable, holding %d: %r", len(bars), exc)
        self._held.extend(bars)
        if len(self._held) > MAX_HELD:
            self.sink_dropped += len(self._held) - MAX_HELD
            del self._held[: len(self._held) - MAX_HELD]

    @property
    def held(self) -> int:
        """Closed bars waiting for the sink to accept them."""
        return len(self._held)
