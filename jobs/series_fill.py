"""Fallback mode: the mark/index minutes and funding events the markPrice stream missed, from REST.

The stream misses what happened while the service was down, and the minutes it saw only in
part (the first after a start or a reconnect: :mod:`klinestore.ingest.markbars` writes only
whole minutes). Each run, per symbol:

* mark and index 1m bars: the minutes of the last ``LOOKBACK_MS`` missing from storage (WAL
  included), up to ``SETTLE_MS`` before exchange-now (the stream closes a minute at the next
  minute's first update), from ``markPriceKlines`` / ``indexPriceKlines``, source ``rest``;
* funding: once per 8 h period, the events of the last ``LOOKBACK_MS`` from ``fundingRate``
  (3 a day: re-storing the known ones costs nothing and closes any hole among them).

Requests go at ``CHECK`` priority (after order-book syncs and kline back-fills); storage is
read in a thread. Rows go through the feed's :class:`~klinestore.ingest.markbars.MarkSeriesOut`, so they are
durable (WAL) and held back on a storage failure exactly like the stream's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from klinestore.core.intervals import HOUR_MS, MINUTE_MS
from klinestore.ingest.budget import Priority
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.errors import IngestError
from klinestore.ingest.markbars import MarkSeriesOut
from klinestore.ingest.rest import RestClient
from klinestore.storage import funding_row, gaps_among, price_bar, read_price_bars

log = logging.getLogger(__name__)

LOOKBACK_MS = 24 * HOUR_MS
SETTLE_MS = 2 * MINUTE_MS
FUNDING_PERIOD_MS = 8 * HOUR_MS
#: Minutes asked per request (Binance's klines maximum).
REQUEST_MINUTES = 1500


class SeriesFill:
    """The fallback fill of mark, index and funding (see the module docstring)."""

    def __init__(
        self, rest: RestClient, out: MarkSeriesOut, data_dir: Path, clock: ExchangeClock,
        symbols: Callable[[], Sequence[str]],
    ) -> None:
        self.rest, self.out, self.data_dir, self.clock, self.symbols = rest, out, Path(data_dir), clock, symbols
        self._funding_asked: dict[str, int] = {}  # symbol -> the 8 h period last asked in
        self.filled = {"mark": 0, "index": 0, "funding": 0}
        self.failures = 0

    async def run(self) -> None:
        now = self.clock.now_ms()
        if now is None:
            return
        for symbol in self.symbols():
            try:
                for kind in ("mark", "index"):
                    await self._fill_bars(kind, symbol, now)
                await self._fill_funding(symbol, now)
            except IngestError as exc:  # the next run tries again
                self.failures += 1
                log.warning("series fill of %s failed: %s", symbol, exc)

    async def _fill_bars(self, kind: str, symbol: str, now: int) -> None:
        end = (now - SETTLE_MS) // MINUTE_MS * MINUTE_MS
        start = end - LOOKBACK_MS
        stored = await asyncio.to_thread(read_price_bars, self.data_dir, kind, symbol, "1m", start, end, wal=True)
        present = stored.get_column("open_time").dt.epoch("ms").to_numpy()
        for first, last in gaps_among(present, "1m", start, end):
            at = first
            while at <= last:
                rows = await self.rest.price_klines(kind, symbol, "1m", start_ms=at, end_ms=last, limit=REQUEST_MINUTES,
                                                    priority=Priority.CHECK)
                bars = [price_bar(symbol, "1m", r.open_time, (r.open, r.high, r.low, r.close), source="rest",
                                  seconds=r.trades or None) for r in rows if first <= r.open_time <= last]
                if bars:
                    self.out.append(kind, bars)
                    self.filled[kind] += len(bars)
                if len(rows) < REQUEST_MINUTES:
                    break
                at = rows[-1].open_time + MINUTE_MS

    async def _fill_funding(self, symbol: str, now: int) -> None:
        period = now // FUNDING_PERIOD_MS
        if self._funding_asked.get(symbol) == period:
            return
        events = await self.rest.funding_rates(symbol, start_ms=now - LOOKBACK_MS, end_ms=now, priority=Priority.CHECK)
        rows = [funding_row(symbol, e.fundingTime, e.fundingRate, e.mark_price, source="rest")
                for e in events if e.symbol == symbol]
        if rows:
            self.out.append("funding", rows)
            self.filled["funding"] += len(rows)
        self._funding_asked[symbol] = period
