"""The exchange's book of record: bars of every interval, trades, prices, for any instant.

A :class:`Market` sits on a source of hours (generated or replayed) and the listing
schedule. It answers for any exchange time, independent of who subscribed when: the ground
truth, REST klines and the WebSocket streams all read it, so they agree by construction.
Hours are cached (LRU, bounded); anything evicted is rebuilt identically on demand.

A symbol's market starts at ``max(origin, listing)`` and ends at its delisting (or the end of
a replayed archive). Buckets keep Binance's grid: the first 1h bar of a symbol listed at
12:30 opens at 12:00 and holds the minutes from 12:30.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from klinestore.core.intervals import MINUTE_MS, bar_open, next_open
from klinestore.sim.bars import Bar, finish, merge
from klinestore.sim.chunk import HOUR_MS, Chunk
from klinestore.sim.instruments import SymbolSpec
from klinestore.sim.listings import Listings


class Source(Protocol):
    def spec(self, symbol: str) -> SymbolSpec: ...

    def build(self, symbol: str, hour_ms: int, onboard_ms: int | None = None) -> Chunk: ...


@dataclass(frozen=True, slots=True)
class Span:
    """When a symbol's market has bars: minutes in ``[first_ms, end_ms)``."""

    first_ms: int
    end_ms: int | None

    def holds(self, t: int) -> bool:
        return self.first_ms <= t and (self.end_ms is None or t < self.end_ms)


class Market:
    """Bars, trades and prices of every symbol, from one source and one listing schedule."""

    def __init__(
        self, source: Source, listings: Listings, origin_ms: int, *, ends: dict[str, int] | None = None,
        cache_hours: int = 512,
    ) -> None:
        self.source = source
        self.listings = listings
        self.origin_ms = origin_ms // MINUTE_MS * MINUTE_MS
        self._ends = dict(ends or {})
        self._cache: OrderedDict[tuple[str, int], Chunk] = OrderedDict()
        self._cache_hours = cache_hours
        self.corrections: dict[tuple[str, str, int], Bar] = {}
        self._spans: dict[str, Span | None] = {}
        self._spans_version = -1
        self._partials: dict[str, tuple[int, Bar | None]] = {}

    # --- symbols ------------------------------------------------------------------------

    def spec(self, symbol: str) -> SymbolSpec:
        return self.source.spec(symbol)

    def span(self, symbol: str) -> Span | None:
        if self._spans_version != self.listings.version:
            self._spans.clear()
            self._spans_version = self.listings.version
        try:
            return self._spans[symbol]
        except KeyError:
            span = self._spans[symbol] = self._span(symbol)
            return span

    def _span(self, symbol: str) -> Span | None:
        window = self.listings.window(symbol)
        if window is None:
            return None
        end = window.delist_ms
        replay_end = self._ends.get(symbol)
        if replay_end is not None:
            end = replay_end if end is None else min(end, replay_end)
        return Span(max(self.origin_ms, window.onboard_ms), end)

    def trading(self, symbol: str, t: int) -> bool:
        span = self.span(symbol)
        return span is not None and span.holds(t)

    # --- hours --------------------------------------------------------------------------

    def chunk(self, symbol: str, hour_ms: int) -> Chunk:
        key = (symbol, hour_ms)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        window = self.listings.window(symbol)
        found = self._cache[key] = self.source.build(symbol, hour_ms, window.onboard_ms if window else None)
        if len(self._cache) > self._cache_hours:
            self._cache.popitem(last=False)
        return found

    def _prev_close(self, symbol: str, hour_ms: int) -> int:
        close = self.chunk(symbol, hour_ms - HOUR_MS).last_close()
        if close is None:
            return int(self.chunk(symbol, hour_ms).minutes.open[0])
        return close

    # --- bars ---------------------------------------------------------------------------

    def minutes(self, symbol: str, start: int, end: int) -> Iterator[Bar]:
        """Closed 1m bars with open time in ``[start, end)`` inside the symbol's span."""
        span = self.span(symbol)
        if span is None:
            return
        start = max(start, span.first_ms)
        if span.end_ms is not None:
            end = min(end, span.end_ms)
        hour = start // HOUR_MS * HOUR_MS
        while hour < end:
            for bar in self.chunk(symbol, hour).bars():
                if bar is not None and start <= bar.open_time < end:
                    yield bar
            hour += HOUR_MS

    def partial_minute(self, symbol: str, t: int) -> Bar | None:
        """The 1m bar holding ``t`` as it stands at ``t`` (None outside the span or missing).

        The last answer per symbol is kept: every kline interval of a symbol asks for the same
        instant in one pump tick.
        """
        cached = self._partials.get(symbol)
        if cached is not None and cached[0] == t:
            return cached[1]
        span = self.span(symbol)
        if span is None or not span.holds(t // MINUTE_MS * MINUTE_MS):
            bar = None
        else:
            hour = t // HOUR_MS * HOUR_MS
            bar = self.chunk(symbol, hour).partial_minute(t, lambda: self._prev_close(symbol, hour))
        self._partials[symbol] = (t, bar)
        return bar

    def bucket(self, symbol: str, interval: str, open_ms: int, now: int) -> Bar | None:
        """The bar of ``interval`` opening at ``open_ms`` as it stands at ``now`` (closed if over)."""
        end = next_open(open_ms, interval)
        minute_now = now // MINUTE_MS * MINUTE_MS
        acc: Bar | None = None
        for bar in self.minutes(symbol, open_ms, min(end, minute_now)):
            acc = merge(acc, bar)
        if now < end:
            partial = self.partial_minute(symbol, now)
            if partial is not None:
                acc = merge(acc, partial)
        return None if acc is None else finish(acc, open_ms, interval)

    def bars(self, symbol: str, interval: str, first_open: int, last_open: int, now: int) -> list[Bar]:
        """Bars opening in ``[first_open, last_open]`` that exist at ``now`` (the last may be open).

        One pass over the minutes. Corrected bars (``kline_mismatch``) replace the original:
        this is the REST view and the ground truth, not what the WebSocket sent.
        """
        span = self.span(symbol)
        if span is None:
            return []
        first = bar_open(max(first_open, bar_open(span.first_ms, interval)), interval)
        if first < first_open:
            first = next_open(first, interval)
        hi = min(last_open, now) if span.end_ms is None else min(last_open, now, span.end_ms - 1)
        if first > hi:
            return []
        stop = next_open(bar_open(hi, interval), interval)
        out: list[Bar] = []
        current, acc = first, None

        def add(bar: Bar) -> None:
            nonlocal current, acc
            while bar.open_time >= next_open(current, interval):
                if acc is not None:
                    out.append(self._corrected(symbol, interval, finish(acc, current, interval)))
                current, acc = next_open(current, interval), None
            acc = merge(acc, bar)

        for bar in self.minutes(symbol, first, min(stop, now // MINUTE_MS * MINUTE_MS)):
            add(bar)
        if now < stop:
            partial = self.partial_minute(symbol, now)
            if partial is not None and partial.open_time >= first:
                add(partial)
        if acc is not None:
            out.append(self._corrected(symbol, interval, finish(acc, current, interval)))
        return out

    def _corrected(self, symbol: str, interval: str, bar: Bar) -> Bar:
        return self.corrections.get((symbol, interval, bar.open_time), bar)

    def closed_bars(self, symbol: str, interval: str, now: int) -> list[Bar]:
        """Every bar closed by ``now`` since the symbol's market began: the ground truth."""
        span = self.span(symbol)
        if span is None:
            return []
        last = bar_open(now, interval)
        return [b for b in self.bars(symbol, interval, 0, last, now) if next_open(b.open_time, interval) <= now]

    # --- trades and prices ------------------------------------------------------------------

    def trades(self, symbol: str, after: int, upto: int) -> Iterator[tuple[Chunk, int, int]]:
        """Slices ``(chunk, lo, hi)`` of trades with ``after < time <= upto`` inside the span."""
        span = self.span(symbol)
        if span is None or upto <= after:
            return
        after = max(after, span.first_ms - 1)
        if span.end_ms is not None:
            upto = min(upto, span.end_ms - 1)
        hour = (after + 1) // HOUR_MS * HOUR_MS
        while hour <= upto:
            chunk = self.chunk(symbol, hour)
            lo, hi = chunk.trade_range(max(after, hour - 1), min(upto, hour + HOUR_MS - 1))
            if hi > lo:
                yield chunk, lo, hi
            hour += HOUR_MS

    def next_trade_time(self, symbol: str, after: int) -> int | None:
        """Time of the first trade after ``after`` in the same hour (None: not this hour)."""
        span = self.span(symbol)
        if span is None:
            return None
        t = self.chunk(symbol, after // HOUR_MS * HOUR_MS).next_trade_time(after)
        if t is None or not span.holds(t):
            return None
        return t

    def prices_at(self, symbol: str, times: np.ndarray) -> np.ndarray:
        """The last trade price at or before each time (times sorted ascending)."""
        out = np.empty(len(times), dtype=np.int64)
        hours = times // HOUR_MS * HOUR_MS
        for hour in np.unique(hours).tolist():
            mask = hours == hour
            prices = self.chunk(symbol, hour).prices_at(times[mask])
            if (prices < 0).any():
                prices = np.where(prices < 0, self._prev_close(symbol, hour), prices)
            out[mask] = prices
        return out

    def price_at(self, symbol: str, t: int) -> int:
        return int(self.prices_at(symbol, np.array([t], dtype=np.int64))[0])
