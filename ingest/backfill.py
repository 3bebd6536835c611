"""REST back-fill of kline gaps (fallback mode only; seed v4.4's third layer).

Gaps found at start-up or after a reconnect are queued (bounded, deduplicated) and filled one
at a time from ``/fapi/v1/klines`` in pages of up to 1500 bars, through the REST client's
weight budget. Bars come back with ``source="rest"`` and enter exactly like live closes:
sink (WAL) first, then the ring (in order, never duplicated), then ``on_kline_close``. Only
bars closed by exchange-now are taken. In WebSocket-only mode this module is never built,
and the REST client refuses klines anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from klinestore.core.intervals import bar_open, next_open
from klinestore.core.schema import Bar
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.dispatcher import Dispatcher
from klinestore.ingest.errors import IngestError
from klinestore.ingest.klines import Gap, KlineSeries
from klinestore.ingest.protocol.rest import KLINES_MAX_LIMIT, RestKline
from klinestore.ingest.rest import RestClient
from klinestore.ingest.state import MarketState

log = logging.getLogger(__name__)

#: Gaps waiting to be filled before new ones are dropped (and counted).
MAX_PENDING = 10_000


def until_live(series: KlineSeries, gap: Gap) -> Gap | None:
    """The bars after ``gap`` up to the first bar ``series`` holds after it, if any are missing."""
    keys = series.ring.tail()["open_time"]
    later = keys[keys > gap.end_open_ms]
    if not len(later):
        return None
    start, end = next_open(gap.end_open_ms, gap.interval), bar_open(int(later[0]) - 1, gap.interval)
    return Gap(gap.symbol, gap.interval, start, end, gap.reason) if start <= end else None


def rest_bar(symbol: str, interval: str, k: RestKline) -> Bar:
    return Bar(symbol, interval, k.open_time, k.close_time, k.open, k.high, k.low, k.close, k.volume,
               k.quote_volume, k.trades, k.taker_buy_volume, k.taker_buy_quote_volume, "rest", True)


class Backfill:
    """Fills gaps from REST klines, one at a time, within the weight budget."""

    def __init__(
        self,
        state: MarketState,
        dispatcher: Dispatcher,
        rest: RestClient,
        clock: ExchangeClock,
        *,
        on_filled: Callable[[Gap, int], None] | None = None,
    ) -> None:
        self.state = state
        self.dispatcher = dispatcher
        self.rest = rest
        self.clock = clock
        self.on_filled = on_filled or (lambda gap, bars: None)
        self.requested = 0
        self.filled_bars = 0
        self.failed = 0
        self.dropped = 0
        self._queue: asyncio.Queue[Gap] = asyncio.Queue(MAX_PENDING)
        self._task: asyncio.Task[None] | None = None

    def request(self, gap: Gap) -> None:
        try:
            self._queue.put_nowait(gap)
            self.requested += 1
        except asyncio.QueueFull:
            self.dropped += 1

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="backfill")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def fill(self, gap: Gap) -> int:
        """Fetch and commit the bars of ``gap``; return how many were committed.

        A ``start`` gap (the history a series lacks) was sized when it was requested, before
        any live bar; if live bars arrived meanwhile, the bars between the history and the first
        of them are fetched too: the series has nothing older to jump from, so no gap would be
        reported for them (a minute closing while the connections subscribed was lost for good).
        """
        series = self.state.klines.get((gap.symbol, gap.interval))
        if series is None:
            return 0
        committed = await self._fetch(series, gap)
        while gap.reason == "start" and (rest := until_live(series, gap)) is not None:
            gap = rest
            added = await self._fetch(series, gap)
            committed += added
            if not added:  # the exchange has nothing more (yet): no loop
                break
        return committed

    async def _fetch(self, series: KlineSeries, gap: Gap) -> int:
        committed = 0
        start = gap.start_open_ms
        while start <= gap.end_open_ms:
            now = self.clock.now_ms()
            rows = await self.rest.klines(gap.symbol, gap.interval, start_ms=start, end_ms=gap.end_open_ms,
                                          limit=min(KLINES_MAX_LIMIT, gap.bar_count()))
            bars = [
                rest_bar(gap.symbol, gap.interval, r) for r in rows
                if gap.start_open_ms <= r.open_time <= gap.end_open_ms and (now is None or r.close_time < now)
            ]
            committed += len(self.dispatcher.accept(series, bars))
            following = next_open(max(r.open_time for r in rows), gap.interval) if rows else start
            if following <= start:  # an empty page, or one that does not move on (a server ignoring
                break  # startTime): asking again would loop for ever, the worker stuck on this gap
            start = following
        return committed

    async def _work(self) -> None:
        while True:
            gap = await self._queue.get()
            try:
                n = await self.fill(gap)
            except IngestError as exc:
                self.failed += 1
                log.warning("back-fill of %s %s %d..%d failed: %s", gap.symbol, gap.interval, gap.start_open_ms,
                            gap.end_open_ms, exc)
                continue
            self.filled_bars += n
            log.info("back-filled %d of %d %s %s bars from REST", n, gap.bar_count(), gap.symbol, gap.interval)
            self.on_filled(gap, n)
