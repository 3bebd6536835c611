"""BarStore: the sink the live service writes closed bars to.

``append`` (event loop, every closed bar) writes the WAL and keeps the bar pending;
``flush`` (a thread, every ``flush_interval``) publishes the pending bars, plus the buckets
they complete in every ``resample_intervals`` interval, as Parquet, and deletes the WAL
segments it consumed in the same atomic publish; ``compact`` (a thread, every
``compaction_interval``) merges this shard's files. ``append`` and ``flush`` may run
concurrently: ``flush`` holds the append lock only to swap the pending map and rotate the
WAL. One process per shard: ``open`` takes the shard's lock and fails if it is held.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from klinestore.core.errors import InvalidSymbol
from klinestore.core.intervals import INTERVALS, MINUTE_MS, bar_open
from klinestore.core.schema import EXCHANGE_SOURCES, SOURCES, Bar
from klinestore.core.symbols import check_symbol
from klinestore.storage.compaction import CompactReport, compact
from klinestore.storage.config import StorageConfig
from klinestore.storage.errors import BarError, StorageError
from klinestore.storage.frames import VERSIONED_SCHEMA, from_bars, latest
from klinestore.storage.fsguard import prepare_dirs
from klinestore.storage.layout import DATASETS, EXCHANGE_RANK, Stamper, dataset_root, shard_writer, state_dir, wal_dir
from klinestore.storage.locks import WriterLock
from klinestore.storage.markers import MarkerWatch, Poll, announcement
from klinestore.storage.quarantine import quarantine_writer
from klinestore.storage.reader import last_open_times, load_recent, missing_after, read_versioned
from klinestore.storage.resample import (
    bucket_ends,
    bucket_opens,
    interval_minutes,
    resample_closed,
    resample_touched_many,
)
from klinestore.storage.txn import Publish, recover
from klinestore.storage.wal import Wal
from klinestore.storage.writer import write_partitions

_INTERVALS = frozenset(INTERVALS)
#: Flushes a shard remembers to match against other writers' publishes (at one a minute, 4 hours).
HISTORY = 256
_FOREVER = 2**62
_SOURCES = frozenset(SOURCES)


@dataclass(frozen=True, slots=True)
class RestartState:
    """What :meth:`BarStore.open` recovered, and what a warm restart needs next."""

    replayed_bars: int  # bars found in the WAL (pending again, flushed by the next flush)
    wal_segments: int
    torn_bytes: int  # a torn WAL tail cut off (the process died mid-append)
    corrupt_records: int  # whole WAL records failing their CRC, moved aside to *.corrupt
    recovered_publishes: int  # interrupted publishes finished or rolled back
    #: Newest stored open time (UTC ms) per (symbol, interval), Parquet plus WAL.
    last_open_times: Mapping[tuple[str, str], int] = field(default_factory=dict)
    #: Damaged files of this shard moved to ``quarantine/`` (their records: file, error, coverage).
    quarantined: tuple[dict, ...] = ()
    #: Corrupt WAL spans set aside, one per interval they held: ``file`` (the segment),
    #: ``interval``, and ``start_ms``/``end_ms`` bounding the open times of the bars lost.
    wal_corrupt: tuple[dict, ...] = ()

    def gap(self, symbol: str, interval: str, now_ms: int) -> tuple[int, int] | None:
        """Bars missing since the last stored one, at exchange time ``now_ms`` (first live event).

        ``(first_missing_open, last_missing_open)`` or None; fallback mode back-fills this
        range from REST, WebSocket-only mode records it.
        """
        return missing_after(self.last_open_times.get((symbol, interval)), interval, now_ms)


@dataclass(frozen=True, slots=True)
class FlushReport:
    bars: int = 0  # appended bars written to Parquet
    resampled: int = 0  # resampled bars written
    files: int = 0
    wal_segments: int = 0  # WAL segments deleted
    seconds: float = 0.0


class BarStore:
    """Durable storage of one shard's closed bars (see the module docstring)."""

    def __init__(self, data_dir: Path, config: StorageConfig, *, shard_id: int = 0, dataset: str = "um") -> None:
        self.data_dir = Path(data_dir)
        self.config = config
        self.dataset = dataset  # "um" (klines) or a series (:mod:`klinestore.storage.series`)
        self.writer = shard_writer(shard_id, dataset)
        self.root = dataset_root(self.data_dir, dataset)
        self._lock = WriterLock(self.data_dir, self.writer)
        self._stamper = Stamper(self.writer)
        self._wal = Wal(wal_dir(self.data_dir, self.writer), fsync_window=config.wal_fsync_window)
        self._pending: dict[tuple[str, str, int], tuple[int, Bar]] = {}
        self._mutex = threading.Lock()  # pending map + WAL order
        self._flush_mutex = threading.Lock()
        self._compact_mutex = threading.Lock()
        self._symbols: set[str] = set()
        self._tail = pl.DataFrame(schema=VERSIONED_SCHEMA)  # recent 1m bars, for resampling
        self._tail_minutes = max((interval_minutes(i) for i in config.resample_intervals), default=1)
        self._watch = MarkerWatch(self.data_dir, self.writer)
        #: (stamp after publish, {symbol: (first, last) minute of the buckets it resampled}) of the last flushes
        self._history: deque[tuple[int, dict[str, tuple[int, int]]]] = deque(maxlen=HISTORY)
        self._open = False

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> RestartState:
        """Take the shard lock, finish interrupted publishes, replay the WAL."""
        prepare_dirs(self.data_dir, state_dir(self.data_dir))
        if not self._lock.acquire():
            raise StorageError(
                f"shard {self.writer} of {self.data_dir} is open in another process (pid {self._lock.holder()})"
            )
        roots = [dataset_root(self.data_dir, m) for m in DATASETS]
        try:
            prepare_dirs(self._wal.directory)
            recovered = recover(self.data_dir, self.writer, roots)
            quarantined = quarantine_writer(self.data_dir, self.writer, roots)
            replay = self._wal.open()
        except BaseException:
            self._lock.release()
            raise
        for stamp, bars in replay.records:
            self._stamper.observe(stamp)
            self._put(stamp, bars)
        self._open = True
        self._watch.prime()  # before the tail is read: a publish after this is seen by the next flush
        self._tail = self._load_tail()
        last = self._last_open_times()
        quarantined += quarantine_writer(self.data_dir, self.writer, roots)  # what reading found damaged
        return RestartState(
            replayed_bars=replay.bars, wal_segments=replay.segments, torn_bytes=replay.torn_bytes,
            corrupt_records=replay.corrupt_records, recovered_publishes=recovered,
            last_open_times=last, quarantined=tuple(quarantined),
            wal_corrupt=tuple(
                {"file": f"wal/{self.writer}/{segment}", "interval": interval, "bytes": span.end - span.start,
                 "start_ms": span.low_ms, "end_ms": None if span.high_ms is None else span.high_ms + 1, "symbols": None}
                for segment, span in replay.corrupt for interval in span.intervals
            ),
        )

    def close(self) -> None:
        """Flush what is pending, stop the WAL and release the shard."""
        if not self._open:
            return
        try:
            self.flush()
        finally:
            self._open = False
            self._wal.close()
            self._lock.release()

    def __enter__(self) -> BarStore:
        self.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def append(self, bars: Sequence[Bar]) -> None:
        """Make closed bars durable (WAL) and pending for the next flush.

        On return the bars survive a ``kill -9``; they survive a power cut ``wal_fsync_window``
        seconds later at most (see :mod:`klinestore.storage.wal`). Raises :class:`BarError` for a bar
        that cannot be a stored kline, before anything is written.
        """
        if not bars:
            return
        for bar in bars:
            self._check(bar)
        stamp = self._stamper.next()
        with self._mutex:
            if not self._open:
                raise StorageError("BarStore is not open")
            self._wal.append(stamp, bars)
            self._put(stamp, bars)

    def flush(self) -> FlushReport:
        """Publish the pending bars and their resampled buckets as Parquet; trim the WAL.

        Also recomputes the buckets that other writers' 1m publishes (an import, another
        shard) may have made stale, even when nothing is pending.
        """
        started = time.perf_counter()
        with self._flush_mutex:
            start = self._stamper.next()
            poll = self._watch.poll()  # before anything is read: a later publish is the next flush's
            with self._mutex:
                batch, self._pending = self._pending, {}
                sealed = self._wal.rotate() if self._open else []
            if not batch and not sealed and not poll.changes and not poll.missed:
                return FlushReport()
            publish = Publish(self.data_dir, self.writer, self._stamper)
            try:
                frame = from_bars([bar for _, bar in batch.values()], [stamp for stamp, _ in batch.values()])
                minutes = frame.filter(pl.col("interval") == "1m")
                learned, stale = self._others(poll, minutes)
                resampled, read_back = self._resample(minutes, learned, stale)
                write_partitions(publish, self.root, pl.concat([frame, resampled]))
                publish.delete(sealed)
                ranges = _ranges(minutes)
                publish.announce = announcement(start, ranges) if ranges else None
                publish.commit()
            except BaseException:
                publish.abort()
                with self._mutex:
                    for key, (stamp, bar) in batch.items():
                        self._keep_best(key, stamp, bar)
                raise
            self._watch.advance(poll)
            self._remember(pl.concat([read_back, learned, stale, minutes]))
            written = _ranges(pl.concat([
                minutes.select("symbol", "open_time", hi="open_time"),
                resampled.select("symbol", "open_time", hi="close_time"),  # every bucket it (re)computed
            ]))
            if written:  # a writer that began reading before this publish may race on these buckets
                self._history.append((self._stamper.next(), written))
        return FlushReport(
            bars=frame.height, resampled=resampled.height, files=len(publish.created), wal_segments=len(sealed),
            seconds=time.perf_counter() - started,
        )

    def compact(self) -> CompactReport:
        """Merge this shard's files (see :mod:`klinestore.storage.compaction`)."""
        with self._compact_mutex:
            return compact(
                self.data_dir, self.writer, self._stamper,
                fan_in=self.config.compaction_min_files, grace=self.config.compaction_grace,
            )

    # -- reading ---------------------------------------------------------------------------

    def load_recent(self, symbols: Sequence[str], sizes: Mapping[str, int]) -> dict[tuple[str, str], pl.DataFrame]:
        """:func:`storage.load_recent` on this store's dataset (Parquet plus WAL)."""
        return load_recent(self.data_dir, symbols, sizes, market=self.dataset)

    def wal_segments(self) -> list[Path]:
        """This shard's WAL segment files on disk (for status: their count and bytes)."""
        return [p for p in wal_dir(self.data_dir, self.writer).glob("*.wal") if p.is_file()]

    @property
    def pending_bars(self) -> int:
        """Bars in the WAL not yet in Parquet (grows only while flushes fail)."""
        return len(self._pending)

    # -- internals -------------------------------------------------------------------------

    def _check(self, bar: Bar) -> None:
        if bar.symbol not in self._symbols:
            try:
                if check_symbol(bar.symbol) != bar.symbol:
                    raise InvalidSymbol(f"symbol {bar.symbol!r} is not canonical (uppercase)")
            except InvalidSymbol as exc:
                raise BarError(str(exc)) from None
            self._symbols.add(bar.symbol)
        if bar.interval not in _INTERVALS:
            raise BarError(f"unknown interval {bar.interval!r} in {bar.key}")
        if not 0 <= bar.trades < 2**63:  # Parquet's int64: a larger count would fail every flush after it
            raise BarError(f"trade count {bar.trades} out of range in {bar.key}")
        if bar.source not in _SOURCES:
            raise BarError(f"unknown source {bar.source!r} in {bar.key}")
        if bar_open(bar.open_time, bar.interval) != bar.open_time or not bar.open_time <= bar.close_time:
            raise BarError(f"open time {bar.open_time} / close time {bar.close_time} do not fit {bar.key}")

    def _put(self, stamp: int, bars: Sequence[Bar]) -> None:
        for bar in bars:
            self._keep_best(bar.key, stamp, bar)

    def _keep_best(self, key: tuple[str, str, int], stamp: int, bar: Bar) -> None:
        """The pending twin of the dedup rule: exchange bars over resampled, then the later stamp."""
        held = self._pending.get(key)
        if held is None or _rank(bar) + stamp >= _rank(held[1]) + held[0]:
            self._pending[key] = (stamp, bar)

    def _resample(
        self, minutes: pl.DataFrame, learned: pl.DataFrame, stale: pl.DataFrame,
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Buckets completed (or changed) by this flush's 1m bars, and the ``stale`` ones, versioned now;
        and the stored 1m bars read back for them (the tail must hold them: a later flush of a
        minute in the same bucket resamples from memory)."""
        intervals = self.config.resample_intervals
        stored = pl.DataFrame(schema=VERSIONED_SCHEMA)
        if minutes.is_empty() and stale.is_empty() or not intervals:
            return stored, stored
        known = latest(pl.concat([self._tail, learned, stale, minutes]))
        covered = int(self._tail.get_column("open_time").min()) if self._tail.height else None
        if minutes.height:
            span = self._tail_minutes * MINUTE_MS
            oldest = int(minutes.get_column("open_time").min()) // span * span - span
            if covered is None or oldest < covered:  # a back-fill older than the tail: read its buckets
                symbols = minutes.get_column("symbol").unique().to_list()
                stored = read_versioned(self.data_dir, "1m", symbols=symbols, start_ms=oldest, end_ms=covered, market=self.dataset)
                known = latest(pl.concat([stored, known]))
        parts = []
        if minutes.height:
            parts += resample_touched_many(known.drop("version"), intervals, minutes.select("symbol", "open_time")).values()
        if stale.height:  # whole buckets read back from disk, plus this flush's minutes in them
            redo = latest(pl.concat([stale, minutes.join(stale.select("symbol").unique(), on="symbol", how="semi")]))
            clock = known.group_by("symbol").agg(now=pl.col("open_time").max() + MINUTE_MS)
            hit = stale.select("symbol", "open_time")
            parts += resample_closed(redo.drop("version"), intervals, hit, clock).values()
        out = pl.concat(parts).unique(subset=["symbol", "interval", "open_time"], keep="any")
        return out.with_columns(pl.lit(self._stamper.next(), pl.Int64).alias("version")), stored

    def _others(self, poll: Poll, minutes: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Other writers' stored 1m bars this shard must take in: ``(learned, stale)``.

        ``learned``: their announced minutes inside the tail, which resamples from memory
        (a bucket this shard completes later must count them). ``stale``: the stored minutes
        of every bucket this shard published into after that writer began reading: either
        may have resampled it without the other's minutes, so it is recomputed now. The
        other buckets a writer touched it resampled itself from what was stored. With
        publishes missed, every bucket of the tail is stale.
        """
        empty = pl.DataFrame(schema=VERSIONED_SCHEMA)
        intervals = self.config.resample_intervals
        if not intervals or not (poll.changes or poll.missed):
            return empty, empty
        mine = self._symbols | set(self._tail.get_column("symbol").unique()) | set(minutes.get_column("symbol").unique())
        tail_from = int(self._tail.get_column("open_time").min()) if self._tail.height else None
        learn: dict[str, list[tuple[int, int]]] = {}
        stale: dict[str, list[tuple[int, int]]] = {}
        if poll.missed and tail_from is not None:
            for symbol in mine:
                stale.setdefault(symbol, []).append((tail_from, _FOREVER))
        for change in poll.changes:
            since = [ranges for stamp, ranges in self._history if stamp > change.start]
            for symbol, lo, hi in change.ranges:
                if symbol not in mine:
                    continue
                if tail_from is not None and hi >= tail_from:
                    learn.setdefault(symbol, []).append((max(lo, tail_from), hi + 1))
                theirs = _buckets(intervals, lo, hi)
                for ours in (_buckets(intervals, *r[symbol]) for r in since if symbol in r):
                    if max(theirs[0], ours[0]) < min(theirs[1], ours[1]):
                        stale.setdefault(symbol, []).append((max(theirs[0], ours[0]), min(theirs[1], ours[1])))
        return self._read_1m(learn), self._read_1m(stale, whole_buckets=True)

    def _read_1m(self, spans: dict[str, list[tuple[int, int]]], *, whole_buckets: bool = False) -> pl.DataFrame:
        """The stored 1m bars of ``[start, end)`` spans per symbol, one read per distinct span."""
        reads: dict[tuple[int, int | None], list[str]] = {}
        for symbol, wanted in spans.items():
            for start, end in _merged(wanted):
                intervals = self.config.resample_intervals
                if whole_buckets:  # from the first minute of the first bucket on
                    start = _buckets(intervals, start, start)[0]
                span: tuple[int, int | None] = (start, None if end >= _FOREVER else end)
                if whole_buckets and end < _FOREVER:
                    span = (start, _buckets(intervals, end - 1, end - 1)[1])
                reads.setdefault(span, []).append(symbol)
        parts = [read_versioned(self.data_dir, "1m", symbols=symbols, start_ms=start, end_ms=end, market=self.dataset)
                 for (start, end), symbols in reads.items()]
        return latest(pl.concat(parts)) if parts else pl.DataFrame(schema=VERSIONED_SCHEMA)

    def _remember(self, minutes: pl.DataFrame) -> None:
        if minutes.is_empty():
            return
        tail = latest(pl.concat([self._tail, minutes]))
        horizon = int(tail.get_column("open_time").max()) - 2 * self._tail_minutes * MINUTE_MS
        self._tail = tail.filter(pl.col("open_time") >= horizon)

    def _load_tail(self) -> pl.DataFrame:
        newest = last_open_times(self.data_dir, "1m", market=self.dataset, wal=False)
        if not newest:
            return pl.DataFrame(schema=VERSIONED_SCHEMA)
        start = max(newest.values()) - 2 * self._tail_minutes * MINUTE_MS
        return read_versioned(self.data_dir, "1m", start_ms=start, market=self.dataset)

    def _last_open_times(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for interval in sorted({p.name.split("=", 1)[1] for p in self.root.glob("interval=*")}):
            for symbol, newest in last_open_times(self.data_dir, interval, market=self.dataset, wal=False).items():
                out[(symbol, interval)] = newest
        for (symbol, interval, open_time) in self._pending:
            out[(symbol, interval)] = max(out.get((symbol, interval), open_time), open_time)
        return out


def _ranges(bars: pl.DataFrame) -> dict[str, tuple[int, int]]:
    """Per symbol, the first open time and the last ``hi`` (default: open time) of some bars."""
    hi = pl.col("hi") if "hi" in bars.columns else pl.col("open_time")
    spans = bars.group_by("symbol").agg(lo=pl.col("open_time").min(), hi=hi.max())
    return {symbol: (lo, hi) for symbol, lo, hi in spans.iter_rows()}


def _buckets(intervals: Sequence[str], lo: int, hi: int) -> tuple[int, int]:
    """``[start, end)`` of every bucket of ``intervals`` holding a minute in ``[lo, hi]``."""
    edges = np.array([lo, hi], dtype=np.int64)
    starts = [bucket_opens(edges, interval) for interval in intervals]
    return (min(int(s[0]) for s in starts),
            max(int(bucket_ends(s[1:], interval)[0]) for s, interval in zip(starts, intervals)))


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _rank(bar: Bar) -> int:
    return EXCHANGE_RANK if bar.source in EXCHANGE_SOURCES else 0
