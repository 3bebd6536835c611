"""Gap records: missing bars, from the moment they are found until they are stored.

Convention (the ``gaps`` table): one row per contiguous run of missing bars of one symbol
and interval; ``start_time`` is the open time of the first missing bar and ``end_time`` the
open time of the LAST missing bar (inclusive, like ``storage.find_gaps``), so a row covers
exactly ``(end - start) / interval + 1`` bars. ``filled_at`` is NULL while the bars are
missing.

Lifecycle:

* **opened** by the feed's ``on_gap`` (after a reconnect, or between the history on disk and
  the first live bar) and, at start, by ``RestartState.gap`` (the bars between the newest
  stored bar and now), reason ``start``/``reconnect``/``gap``. Both describe a hole from its
  first missing bar, so a second report of the same hole extends the row.
* **filled**: in fallback mode the REST back-fill (``on_gap_filled`` with every bar) sets
  ``filled_at``; in any mode the gap check reads storage (``find_gaps_many``: one scan per
  interval, at most ``MAX_SERIES_PER_CHECK`` series a run, in turn) and splits a row
  whose bars appeared (an import by another process, a late bar): the stored runs become rows
  with ``filled_at``, the still-missing runs stay open, each with the original ``detected_at``
  and ``reason``. Higher intervals count only complete bars (a bar resampled from incomplete
  minutes is not the exchange's bar), so their rows close once their minutes are complete.

``GapBook`` mirrors the open rows in memory for DataQual (which reads it at every check);
the database is the record and the book is reloaded from it after every gap check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from klinestore.core.intervals import INTERVALS, bar_open, interval_ms, next_open
from klinestore.ingest.clock import ExchangeClock
from klinestore.storage import RestartState, find_gaps_many, last_open_times
from klinestore.storage.tables import QualityDB

log = logging.getLogger(__name__)

#: Series (symbol, interval) whose open gaps one check reads from storage; the rest wait their turn.
MAX_SERIES_PER_CHECK = 100

OpenGap = tuple[str, str, int, int, int, str]  # symbol, interval, start, end, detected, reason


def split_gap(start: int, end: int, interval: str, missing: Iterable[tuple[int, int]]) -> list[tuple[int, int, bool]]:
    """The record ``[start, end]`` cut into runs ``(first, last, still_missing)`` given storage's missing runs.

    ``missing`` are ``find_gaps`` ranges (inclusive open times, any extent); runs are in
    order, alternate between missing and stored, and together cover ``[start, end]`` exactly.
    """
    runs: list[tuple[int, int, bool]] = []
    cursor = start
    for first, last in sorted(missing):
        first, last = max(first, start), min(last, end)
        if first > last:
            continue
        if first > cursor:
            runs.append((cursor, _previous(first, interval), False))
        runs.append((first, last, True))
        cursor = next_open(last, interval)
    if cursor <= end:
        runs.append((cursor, end, False))
    return runs


def bars_in(start: int, end: int, interval: str) -> int:
    """Bars with open times in ``[start, end]`` (inclusive)."""
    if end < start:
        return 0
    if interval == "1M":
        n, t = 0, start
        while t <= end:
            n, t = n + 1, next_open(t, interval)
        return n
    return (end - start) // interval_ms(interval) + 1


def _previous(open_ms: int, interval: str) -> int:
    return bar_open(open_ms - 1, interval)


class GapBook:
    """Open gap records in memory: (symbol, interval) -> {start: end}."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], dict[int, int]] = {}

    def add(self, symbol: str, interval: str, start: int, end: int) -> None:
        """A new hole, or a known one extended (a record holding ``start`` grows to ``end``)."""
        runs = self._open.setdefault((symbol, interval), {})
        holder = next((s for s, e in runs.items() if s <= start <= e), start)
        runs[holder] = max(end, runs.get(holder, end))

    def remove(self, symbol: str, interval: str, start: int) -> None:
        runs = self._open.get((symbol, interval))
        if runs is not None:
            runs.pop(start, None)

    def replace_all(self, rows: Iterable[OpenGap]) -> None:
        fresh: dict[tuple[str, str], dict[int, int]] = {}
        for symbol, interval, start, end, *_ in rows:
            fresh.setdefault((symbol, interval), {})[start] = end
        self._open = fresh

    def missing_bars(self, symbol: str, interval: str, low: int, high: int) -> int:
        """Missing bars of open records with open times in ``[low, high)``."""
        first_open = low if bar_open(low, interval) == low else next_open(bar_open(low, interval), interval)
        last_open = bar_open(high - 1, interval)
        return sum(bars_in(max(start, first_open), min(end, last_open), interval)
                   for start, end in self._open.get((symbol, interval), {}).items())

    def count(self) -> int:
        return sum(len(runs) for runs in self._open.values())

    def open_runs(self) -> list[tuple[str, str, int, int]]:
        """Every open record as (symbol, interval, first missing open, last missing open)."""
        return [(s, iv, start, end) for (s, iv), runs in self._open.items() for start, end in runs.items()]

    def bars(self, interval: str = "1m") -> int:
        return sum(bars_in(s, e, interval) for (_, iv), runs in self._open.items() if iv == interval
                   for s, e in runs.items())


class GapKeeper:
    """Opens, fills and re-checks gap records (the async glue around ``QualityDB`` and ``find_gaps``)."""

    def __init__(self, db: QualityDB, data_dir: Path, clock: ExchangeClock) -> None:
        self.db = db
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.book = GapBook()
        self.opened = 0
        self.filled = 0
        self.split = 0
        self._next_series = 0  # round-robin cursor of the check
        self._lock = asyncio.Lock()  # a check's reload of the book never loses a gap opened meanwhile

    def _now(self) -> int:
        now = self.clock.now_ms()
        return now if now is not None else 0

    async def load(self) -> None:
        """The records left open by earlier runs (they still count, and are still checked)."""
        async with self._lock:
            self.book.replace_all(await asyncio.to_thread(self.db.open_gaps))

    async def on_gap(self, symbol: str, interval: str, start: int, end: int, reason: str) -> None:
        """``Feed.on_gap``: a hole of missing bars ``[start, end]``."""
        async with self._lock:
            if await asyncio.to_thread(self.db.open_gap, symbol, interval, start, end, self._now(), reason):
                self.opened += 1
            self.book.add(symbol, interval, start, end)

    async def on_filled(self, symbol: str, interval: str, start: int, end: int, bars: int) -> None:
        """``Feed.on_gap_filled`` (fallback): every bar back-filled closes the record at once."""
        if bars < bars_in(start, end, interval):
            return  # partly filled (or some bars were there already): the gap check decides from storage
        async with self._lock:
            if not await asyncio.to_thread(self.db.fill_gap, symbol, interval, start, self._now(), end_ms=end):
                return  # the record holds more than this back-fill covered: the gap check decides
            self.book.remove(symbol, interval, start)
        self.filled += 1

    async def record_restart(self, restart: RestartState, series: Iterable[tuple[str, str]], now_ms: int) -> int:
        """The bars missing between the newest stored bar and ``now_ms`` (taken before any live bar can arrive)."""
        opened = 0
        for symbol, interval in series:
            hole = restart.gap(symbol, interval, now_ms)
            if hole is not None:
                await self.on_gap(symbol, interval, hole[0], hole[1], "start")
                opened += 1
        return opened

    async def record_lost(
        self, records: Iterable[dict], symbols: Iterable[str], now_ms: int, reason: str
    ) -> list[tuple[str, str, int, int]]:
        """Gaps for bars lost with a damaged file or WAL span, that storage does not hold otherwise.

        A record names the file (``bars/...`` for a quarantined Parquet file, ``wal/...`` for a
        corrupt WAL span), an interval, an open-time range ``[start_ms, end_ms)`` and perhaps
        the first and last symbol (else: every symbol stored in that interval); only this
        service's symbols count. Returns the holes recorded ``(symbol, interval, first, last)``.
        """
        opened: list[tuple[str, str, int, int]] = []
        wanted = sorted(set(symbols))
        for record in records:
            interval, start, end = record.get("interval"), record.get("start_ms"), record.get("end_ms")
            if not str(record.get("file", "")).startswith(("bars/", "wal/")) or interval not in INTERVALS \
                    or start is None or record.get("end_ms") is None:
                continue
            end = min(int(end), bar_open(now_ms, interval))  # the open bar is not missing
            named = record.get("symbols")
            if named:
                ranges = {s: (int(start), end) for s in wanted if named[0] <= s <= named[-1]}
            else:  # no statistics (a truncated footer): its whole month, for the symbols stored at all
                stored = await asyncio.to_thread(last_open_times, self.data_dir, interval, wanted)
                ranges = {s: (int(start), end) for s in stored}
            if not ranges or end <= int(start):
                continue
            found = await asyncio.to_thread(find_gaps_many, self.data_dir, interval, ranges)
            for symbol, holes in sorted(found.items()):
                for low, high in holes:
                    await self.on_gap(symbol, interval, low, high, reason)
                    opened.append((symbol, interval, low, high))
        return opened

    async def check(self) -> int:
        """Split or close open records whose bars are now stored; returns the records changed."""
        async with self._lock:
            changed, still_open = await asyncio.to_thread(self._check)
            self.book.replace_all(still_open)
        return changed

    def _check(self) -> tuple[int, list[OpenGap]]:
        rows = self.db.open_gaps()
        by_series: dict[tuple[str, str], list[OpenGap]] = {}
        for row in rows:
            by_series.setdefault((row[0], row[1]), []).append(row)
        keys = sorted(by_series)
        if len(keys) > MAX_SERIES_PER_CHECK:
            start = self._next_series % len(keys)
            keys = (keys[start:] + keys[:start])[:MAX_SERIES_PER_CHECK]
            self._next_series = start + MAX_SERIES_PER_CHECK
        by_interval: dict[str, dict[str, list[OpenGap]]] = {}
        for symbol, interval in keys:
            by_interval.setdefault(interval, {})[symbol] = by_series[(symbol, interval)]
        changed = 0
        for interval, records in by_interval.items():  # one storage scan per interval
            ranges = {s: (min(r[2] for r in recs), next_open(max(r[3] for r in recs), interval))
                      for s, recs in records.items()}
            missing = find_gaps_many(self.data_dir, interval, ranges, complete_only=interval != "1m")
            for symbol, recs in records.items():
                changed += self._split(symbol, interval, recs, missing[symbol])
        return changed, self.db.open_gaps() if changed else rows

    def _split(self, symbol: str, interval: str, records: Sequence[OpenGap], missing: list[tuple[int, int]]) -> int:
        changed = 0
        for _, _, start, end, _, _ in records:
            runs = split_gap(start, end, interval, missing)
            if runs == [(start, end, True)]:
                continue
            now = self._now()
            pieces = [(first, last, None if still else now) for first, last, still in runs]
            if self.db.split_gap(symbol, interval, start, end, pieces):
                changed += 1
                stored = sum(bars_in(f, last, interval) for f, last, still in runs if not still)
                if len(runs) == 1:
                    self.filled += 1
                    log.info("gap %s %s %d..%d filled: its %d bars are stored", symbol, interval, start, end, stored)
                else:
                    self.split += 1
                    log.info("gap %s %s %d..%d: %d bars stored, %d still missing", symbol, interval, start, end,
                             stored, bars_in(start, end, interval) - stored)
        return changed

    def status(self) -> dict[str, int]:
        return {"open": self.book.count(), "open_1m_bars": self.book.bars("1m"), "opened": self.opened,
                "filled": self.filled, "split": self.split}

