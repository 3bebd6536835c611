"""Kline state per (symbol, interval): a columnar ring of closed bars plus the open bar.

Why columnar: the seed keeps a deque of dicts (436 B per bar, measured); a structured numpy
array holds the 11 kline fields and a source code in 89 B per bar, and hands Polars
contiguous columns. The ring grows on demand up to its capacity, so idle series stay small.

Rules (what a user sees):

* The open bar is updated in place by open time (it is the exchange's own message, kept
  as is: no copy on the hot path). An update for an older bar is ``stale``.
* A closed bar is appended exactly once. The same bar again is a ``duplicate``; a closed
  bar older than the newest but missing from the ring (out-of-order delivery, a REST
  back-fill) is inserted in order.
* A bar whose numbers cannot be a bar is rejected with the reason: ``high_below``
  (high under open/close/low), ``low_above``, ``negative_volume``, ``nan``,
  ``taker_exceeds_volume``, ``misaligned`` (open time not on the interval's grid),
  ``close_time`` (not ``open + length - 1``; an earlier close is the exchange's irregular
  outage close and is kept, counted as ``irregular_close``), ``interval_mismatch``.
* A hole before a new bar is a :class:`Gap`, reported once through ``on_gap``: when a closed
  bar jumps over it, or as soon as an open bar has been open for ``CLOSE_GRACE_MS`` while
  the bar before it never closed (after a reconnect that is within seconds, not a whole
  interval later).

Ready (not ``warming_up``): the series holds the newest bar that must have closed by
exchange-now (allowing ``CLOSE_GRACE_MS`` for its close message to arrive). Frames contain
the newest *contiguous* run of closed bars, so they are never wrong: a hole ends them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl

from klinestore.core.intervals import bar_open, interval_ms, is_aligned, next_open
from klinestore.core.schema import SOURCES, Bar
from klinestore.ingest.protocol.events import Kline
from klinestore.ingest.ring import Ring

#: How long (exchange ms) after a bar opens its predecessor's close may still be in flight.
CLOSE_GRACE_MS = 3_000

KLINE_DTYPE = np.dtype(
    [
        ("open_time", "<i8"), ("open", "<f8"), ("high", "<f8"), ("low", "<f8"), ("close", "<f8"),
        ("volume", "<f8"), ("close_time", "<i8"), ("quote_volume", "<f8"), ("trades", "<i8"),
        ("taker_buy_volume", "<f8"), ("taker_buy_quote_volume", "<f8"), ("source", "u1"),
    ]
)
_SOURCE_CODE = {name: i for i, name in enumerate(SOURCES)}
_WEEK_OFFSET_MS = 4 * 86_400_000  # weeks start on Monday; the epoch was a Thursday


@dataclass(frozen=True, slots=True)
class Gap:
    """Closed bars ``start_open_ms`` .. ``end_open_ms`` (open times, inclusive) that never arrived."""

    symbol: str
    interval: str
    start_open_ms: int
    end_open_ms: int
    reason: str  # "start", "reconnect" or "gap"

    def bar_count(self) -> int:
        if self.interval == "1M":
            n, t = 0, self.start_open_ms
            while t <= self.end_open_ms:
                n, t = n + 1, next_open(t, "1M")
            return n
        return (self.end_open_ms - self.start_open_ms) // interval_ms(self.interval) + 1


def ohlcv_problem(o: float, h: float, l: float, c: float, v: float, q: float, vb: float, qb: float) -> str | None:  # noqa: E741
    """Why these numbers cannot be a bar, or None."""
    if h >= o and h >= c and h >= l and l <= o and l <= c and v >= 0 and q >= 0 and vb >= 0 and qb >= 0:
        if vb <= v * (1 + 1e-9) + 1e-12 and qb <= q * (1 + 1e-9) + 1e-9:
            return None
        return "taker_exceeds_volume"
    if any(x != x for x in (o, h, l, c, v, q, vb, qb)):
        return "nan"
    if min(v, q, vb, qb) < 0:
        return "negative_volume"
    return "high_below" if h < max(o, c, l) else "low_above"


def bar_row(bar: Bar) -> tuple[object, ...]:
    return (
        bar.open_time, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.close_time,
        bar.quote_volume, bar.trades, bar.taker_buy_volume, bar.taker_buy_quote_volume,
        _SOURCE_CODE.get(bar.source, 0),
    )


def kline_bar(symbol: str, k: Kline, source: str = "ws") -> Bar:
    """The :class:`Bar` of a (closed) kline message."""
    return Bar(symbol, k.i, k.t, k.T, k.o, k.h, k.l, k.c, k.v, k.q, k.n, k.V, k.Q, source, True)


class KlineSeries:
    """One (symbol, interval): its closed-bar ring, its open bar, and its gap bookkeeping."""

    __slots__ = (
        "symbol", "interval", "ring", "open_bar", "rejected", "irregular_closes", "_iv", "_offset",
        "_last", "_expected", "_reported_until", "_reason", "_contiguous_from", "_on_gap",
    )

    def __init__(
        self,
        symbol: str,
        interval: str,
        capacity: int,
        *,
        rejected: Counter[str] | None = None,
        on_gap: Callable[[Gap], None] | None = None,
    ) -> None:
        self.symbol = symbol
        self.interval = interval
        self.ring = Ring(KLINE_DTYPE, capacity, key="open_time")
        self.open_bar: Kline | None = None
        self.rejected: Counter[str] = Counter() if rejected is None else rejected
        self.irregular_closes = 0
        self._iv = 0 if interval == "1M" else interval_ms(interval)
        self._offset = _WEEK_OFFSET_MS if interval == "1w" else 0
        self._last = -1  # open time of the newest closed bar
        self._expected = -1  # open time of the bar after it
        self._reported_until = -1
        self._reason = "start"
        self._contiguous_from = -1
        self._on_gap = on_gap

    # --- the hot path: open-bar updates ---------------------------------------------------

    def update_open(self, k: Kline, event_ms: int) -> str | None:
        """Take an update of the open bar; return the reject reason, or None if taken."""
        t = k.t
        ob = self.open_bar
        if ob is not None and t == ob.t and k.T == ob.T and k.i == ob.i and not k.x:
            # Another update of the bar we hold (the common case): its times were checked then.
            o, h, l, c, v, q = k.o, k.h, k.l, k.c, k.v, k.q  # noqa: E741
            if (h >= o and h >= c and h >= l and l <= o and l <= c
                    and k.V <= v * (1 + 1e-9) + 1e-12 and k.Q <= q * (1 + 1e-9) + 1e-9):
                self.open_bar = k
                if t > self._expected >= 0 and event_ms - t >= CLOSE_GRACE_MS and self._prev(t) > self._reported_until:
                    self._report_gap(self._prev(t))
                return None
            return self._reject(ohlcv_problem(o, h, l, c, v, q, k.V, k.Q) or "high_below")
        if t <= self._last or (ob is not None and t < ob.t):
            return self._reject("stale")
        problem = self._kline_problem(k)
        if problem is not None:
            return self._reject(problem)
        self.open_bar = k
        if t > self._expected >= 0 and event_ms - t >= CLOSE_GRACE_MS and self._prev(t) > self._reported_until:
            self._report_gap(self._prev(t))
        elif self._reason != "gap" and self._last >= 0 and t == self._expected:
            self._reason = "gap"  # first update after (re)subscribing found no hole
        return None

    # --- closed bars: check, persist elsewhere, then commit ---------------------------------

    def check_close(self, bar: Bar) -> str:
        """``"append"``, ``"insert"`` (an older bar missing from the ring) or the reject reason.

        Nothing changes here, so the caller can make the bar durable before committing it.
        """
        t = bar.open_time
        if t == self._last:
            return self._reject("duplicate")
        problem = self._bar_problem(bar)
        if problem is not None:
            return self._reject(problem)
        if t > self._last:
            return "append"
        if self.ring.contains(t):
            return self._reject("duplicate")
        if len(self.ring) >= self.ring.capacity and t < self.ring.key_at(0):
            return self._reject("stale")  # older than all we keep
        return "insert"

    def commit_close(self, bar: Bar, verdict: str) -> None:
        """Add a bar that ``check_close`` accepted (and that is durable by now)."""
        if verdict == "insert" or bar.open_time <= self._last:  # (a stale "append" verdict, too)
            self.insert((bar,), checked=True)
            return
        t = bar.open_time
        if self._last < 0:
            self._contiguous_from = t
        elif t != self._expected:
            self._report_gap(self._prev(t))
            self._contiguous_from = t
        self._reason = "gap"
        self.ring.append(bar_row(bar))
        if bar.close_time < self._next(t) - 1:
            self.irregular_closes += 1
        self._last, self._expected = t, self._next(t)
        ob = self.open_bar
        if ob is not None and ob.t <= t:
            self.open_bar = None

    def insert(self, bars: Iterable[Bar], *, replace: bool = False, checked: bool = False) -> list[Bar]:
        """Merge older or missing bars in open-time order (REST back-fill, warm restart, late bars).

        Existing bars win unless ``replace`` (reconciliation: REST wins). Returns the bars that
        were added or replaced. Bars older than the ring's capacity allows are dropped.
        """
        valid: dict[int, Bar] = {}
        for bar in bars:
            problem = None if checked else self._bar_problem(bar)
            if problem is not None:
                self._reject(problem)
            else:
                valid[bar.open_time] = bar
        if not valid:
            return []
        ordered = [valid[t] for t in sorted(valid)]
        rows = np.array([bar_row(b) for b in ordered], dtype=KLINE_DTYPE)
        taken = self.ring.merge(rows, replace=replace)
        self.rejected["duplicate"] += int(len(taken) - taken.sum())
        self._resync_after_merge()
        kept_from = self.ring.key_at(0) if len(self.ring) else 0
        return [b for b, ok in zip(ordered, taken) if ok and b.open_time >= kept_from]

    def load_rows(self, rows: np.ndarray) -> int:
        """Warm restart: merge history rows (``KLINE_DTYPE``, from disk) checked as a whole; return rows kept.

        Rows that cannot be bars (the same rules as live bars, vectorized) are dropped and
        counted as ``rejected["invalid_history"]``; existing bars win over loaded ones.
        """
        if len(rows) == 0:
            return 0
        t, o, h, l, c = rows["open_time"], rows["open"], rows["high"], rows["low"], rows["close"]  # noqa: E741
        ok = (h >= o) & (h >= c) & (h >= l) & (l <= o) & (l <= c) & (rows["close_time"] >= t)
        ok &= (rows["volume"] >= 0) & (rows["quote_volume"] >= 0) & (rows["trades"] >= 0)
        ok &= rows["close_time"] < (t + self._iv if self._iv else t + 32 * 86_400_000)
        if self._iv:
            ok &= (t - self._offset) % self._iv == 0
        self.rejected["invalid_history"] += int(len(rows) - ok.sum())
        rows = rows[ok]
        order = np.argsort(rows["open_time"], kind="stable")
        rows = rows[order]
        unique = np.ones(len(rows), dtype=bool)
        unique[1:] = rows["open_time"][1:] != rows["open_time"][:-1]
        taken = self.ring.merge(rows[unique])
        self._resync_after_merge()
        return int(taken.sum())

    # --- reading ----------------------------------------------------------------------------

    @property
    def last_open_time(self) -> int:
        """Open time of the newest closed bar (-1 when there is none)."""
        return self._last

    @property
    def contiguous_from(self) -> int:
        """Open time of the first bar of the newest contiguous run the ring still holds (-1 when empty):
        the run may have begun before the ring's oldest bar, which the ring has dropped since."""
        if self._contiguous_from < 0 or not len(self.ring):
            return self._contiguous_from
        return max(self._contiguous_from, self.ring.key_at(0))

    def contiguous_count(self) -> int:
        if self._last < 0:
            return 0
        if self._iv:
            return min(len(self.ring), (self._last - self._contiguous_from) // self._iv + 1)
        n, t = 1, self._contiguous_from
        while t < self._last:
            n, t = n + 1, next_open(t, self.interval)
        return min(n, len(self.ring))

    def ready(self, now_ms: int | None) -> bool:
        """True when the newest bar that must have closed by ``now_ms`` is here."""
        if now_ms is None or self._last < 0:
            return False
        return self._last >= self._prev(bar_open(now_ms - CLOSE_GRACE_MS, self.interval))

    def frame(self, *, allow_gaps: bool = False, include_open: bool = False, limit: int | None = None) -> pl.DataFrame:
        """Closed bars as Polars (columns of ``klinestore.core.schema.BAR_SCHEMA``), oldest first.

        Only the newest contiguous run unless ``allow_gaps``; ``include_open`` adds the open
        bar as a last row with ``is_complete`` false.
        """
        n = len(self.ring) if allow_gaps else self.contiguous_count()
        if limit is not None:
            n = min(n, limit)
        rows = self.ring.tail(n)
        if include_open and self.open_bar is not None:
            k = self.open_bar
            extra = np.array([(k.t, k.o, k.h, k.l, k.c, k.v, k.T, k.q, k.n, k.V, k.Q, 0)], dtype=KLINE_DTYPE)
            rows = np.concatenate((rows, extra))
        complete = np.ones(len(rows), dtype=bool)
        if include_open and self.open_bar is not None:
            complete[-1] = False
        return rows_frame(self.symbol, self.interval, rows, complete)

    # --- internals ----------------------------------------------------------------------------

    def mark_interrupted(self) -> None:
        """The stream was lost: a hole found on its next update is a ``reconnect`` gap."""
        self._reason = "reconnect"

    def _reject(self, reason: str) -> str:
        self.rejected[reason] += 1
        return reason

    def _next(self, t: int) -> int:
        return t + self._iv if self._iv else next_open(t, self.interval)

    def _prev(self, t: int) -> int:
        return t - self._iv if self._iv else bar_open(t - 1, self.interval)

    def _aligned(self, t: int) -> bool:
        return (t - self._offset) % self._iv == 0 if self._iv else is_aligned(t, self.interval)

    def _kline_problem(self, k: Kline) -> str | None:
        if k.i != self.interval:
            return "interval_mismatch"
        if not self._aligned(k.t):
            return "misaligned"
        if k.T != self._next(k.t) - 1 and not (k.x and k.t <= k.T < self._next(k.t)):
            return "close_time"
        return ohlcv_problem(k.o, k.h, k.l, k.c, k.v, k.q, k.V, k.Q)

    def _bar_problem(self, b: Bar) -> str | None:
        if b.interval != self.interval or b.symbol != self.symbol:
            return "interval_mismatch"
        if not self._aligned(b.open_time):
            return "misaligned"
        if not b.open_time <= b.close_time < self._next(b.open_time):
            return "close_time"
        if b.trades < 0:
            return "negative_volume"
        return ohlcv_problem(b.open, b.high, b.low, b.close, b.volume, b.quote_volume, b.taker_buy_volume,
                             b.taker_buy_quote_volume)

    def _report_gap(self, end: int) -> None:
        start = self._expected
        if self._reported_until >= 0:
            start = max(start, self._next(self._reported_until))
        if start <= end:
            self._reported_until = end
            if self._on_gap is not None:
                self._on_gap(Gap(self.symbol, self.interval, start, end, self._reason))
        self._reason = "gap"

    def _resync_after_merge(self) -> None:
        n = len(self.ring)
        if n == 0:
            self._last, self._expected, self._contiguous_from = -1, -1, -1
            return
        times = self.ring.tail()["open_time"]
        self._last = int(times[-1])
        self._expected = self._next(self._last)
        if self._iv:
            breaks = np.flatnonzero(np.diff(times) != self._iv)
            self._contiguous_from = int(times[breaks[-1] + 1]) if len(breaks) else int(times[0])
        else:
            i = n - 1
            while i > 0 and next_open(int(times[i - 1]), self.interval) == int(times[i]):
                i -= 1
            self._contiguous_from = int(times[i])
        ob = self.open_bar
        if ob is not None and ob.t <= self._last:
            self.open_bar = None


_EMPTY = np.zeros(0, dtype=KLINE_DTYPE)


def frame_rows(frame: pl.DataFrame) -> np.ndarray:
    """Ring rows from a frame of bars (``BAR_SCHEMA`` columns; times as UTC datetimes or ms)."""
    rows = np.zeros(frame.height, dtype=KLINE_DTYPE)
    for name in KLINE_DTYPE.names or ():
        if name == "source":
            continue
        column = frame.get_column(name)
        if column.dtype.is_temporal():
            column = column.dt.epoch("ms")
        rows[name] = column.to_numpy()
    if "source" in frame.columns:
        codes = {name: i for i, name in enumerate(SOURCES)}
        rows["source"] = np.array([codes.get(s, 0) for s in frame.get_column("source").to_list()], dtype="u1")
    return rows


def rows_frame(symbol: str, interval: str, rows: np.ndarray, complete: np.ndarray | None = None) -> pl.DataFrame:
    """A Polars frame in ``BAR_SCHEMA``'s column order from ring rows."""
    n = len(rows)
    utc = pl.Datetime("ms", "UTC")
    return pl.DataFrame(
        {
            "symbol": pl.Series([symbol] * n, dtype=pl.String),
            "interval": pl.Series([interval] * n, dtype=pl.String),
            "open_time": pl.Series(np.ascontiguousarray(rows["open_time"])).cast(utc),
            "close_time": pl.Series(np.ascontiguousarray(rows["close_time"])).cast(utc),
            **{
                name: pl.Series(np.ascontiguousarray(rows[name]))
                for name in ("open", "high", "low", "close", "volume", "quote_volume", "trades",
                             "taker_buy_volume", "taker_buy_quote_volume")
            },
            "is_complete": pl.Series(np.ones(n, dtype=bool) if complete is None else complete),
            "source": pl.Series(np.asarray(SOURCES, dtype=object)[rows["source"]].tolist(), dtype=pl.String),
        }
    )


def empty_frame(symbol: str = "", interval: str = "") -> pl.DataFrame:
    """The frame of a series that is warming up: the right columns, no rows."""
    return rows_frame(symbol, interval, _EMPTY)
