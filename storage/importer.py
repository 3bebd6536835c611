"""Importing archives: validate every file, then publish all of their bars at once.

The importer writes as writer ``imp`` under its lock (concurrent imports queue; the live
service's shards are other writers). Groups are (symbol, interval), taken in symbol order.
A pipeline keeps both cores busy: files are read and validated on a thread pool (inflate
and CSV parsing release the GIL), each group is then compared with what is stored and its
changed 1m bars resampled on a second pool (only bars that differ from what is stored are
kept, so importing a file twice changes nothing, not even the file list; resampling covers
every bucket touched, stored minutes of those buckets included), and the main thread hands
each symbol's rows to :class:`~klinestore.storage.writer.PartitionFiles`, which encodes a partition's
row groups as they fill, while later files are still being parsed. One file per partition
is written for every ``STAGE_ROWS`` bars. Only when every file has been read and validated
does one publish make them all visible; any error drops every staged file. A tiered
compaction of the importer's files then keeps the file count bounded.

A first import skips the work that only matters when something is stored: when the
dataset holds nothing of a group's symbol and range, there is nothing to compare with and
every bucket is new.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from klinestore.storage.archive import ArchiveFile, describe, find_archives, read_archive
from klinestore.storage.compaction import compact
from klinestore.storage.config import StorageConfig
from klinestore.storage.frames import PARTITION_KEY, VERSIONED_SCHEMA, latest, with_version
from klinestore.storage.layout import DATASETS, IMPORT_WRITER, Stamper, dataset_root
from klinestore.storage.locks import WriterLock
from klinestore.storage.markers import announcement
from klinestore.storage.reader import read_versioned, scan_files
from klinestore.storage.resample import bucket_ends, bucket_opens, resample_many
from klinestore.storage.series import price_rows
from klinestore.storage.txn import Publish, recover
from klinestore.storage.writer import PartitionFiles

#: Bars staged in memory before they are written (as tmp files) to the publish.
STAGE_ROWS = 4_000_000
_CORES = os.cpu_count() or 2
_VALUES = ("close_time", "open", "high", "low", "close", "volume", "quote_volume", "trades",
           "taker_buy_volume", "taker_buy_quote_volume", "is_complete")


@dataclass(slots=True)
class ImportReport:
    files: int = 0
    rows: int = 0  # bars read from the files
    written: int = 0  # bars written (new or changed)
    resampled: int = 0  # resampled bars written
    unchanged: int = 0  # bars already stored with the same values
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


Progress = Callable[[ArchiveFile], None]


def import_archives(
    paths: Sequence[Path],
    data_dir: Path,
    config: StorageConfig,
    *,
    market: str = "um",
    symbol: str | None = None,
    interval: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import kline and aggTrades archives (files or directories) into ``data_dir``.

    ``market``: the dataset: ``um`` (default), ``spot``, or the USD-M ``mark`` / ``index``
    series (markPriceKlines / indexPriceKlines archives, which have the kline layout).
    """
    started = time.perf_counter()
    root = dataset_root(data_dir, market)
    specs = [describe(p, symbol=symbol, interval=interval) for p in find_archives(list(paths))]
    report = ImportReport(files=len(specs))
    groups: dict[tuple[str, str], list[ArchiveFile]] = {}
    for spec in sorted(specs, key=lambda s: (s.symbol, s.interval)):  # stable: file order kept per group
        groups.setdefault((spec.symbol, spec.interval), []).append(spec)
    stamper = Stamper(IMPORT_WRITER)
    with WriterLock(data_dir, IMPORT_WRITER):
        recover(data_dir, IMPORT_WRITER, [dataset_root(data_dir, m) for m in DATASETS])
        stamp = stamper.next()
        publish = Publish(data_dir, IMPORT_WRITER, stamper)
        try:
            with ThreadPoolExecutor(max_workers=_CORES) as workers, ThreadPoolExecutor(max_workers=_CORES) as encoders:
                files = PartitionFiles(publish, root, encoders)
                minutes: dict[str, tuple[int, int]] = {}  # per symbol, the 1m range written
                try:
                    stored = _Stored(data_dir, market, {i for _, i in groups} | set(config.resample_intervals))
                    prepared = (workers.submit(_prepare, key, bars, stored, config.resample_intervals, stamp)
                                for key, bars in _groups(groups, progress, _reader(market)))
                    for symbol_groups in _by_symbol(_in_order(prepared, ahead=_CORES)):
                        staged = []
                        for group in symbol_groups:
                            report.rows += group.rows
                            report.written += group.written
                            report.unchanged += group.rows - group.written
                            report.resampled += group.resampled
                            staged.extend(group.staged)
                            minutes.update(_minute_range(group))
                        for part in _per_interval(staged):
                            files.add(part)
                        if files.rows >= STAGE_ROWS:
                            files.close()
                            files = PartitionFiles(publish, root, encoders)
                    files.close()
                except BaseException:
                    files.discard()
                    raise
            if minutes and market != "spot":  # the live service resamples USD-M (and its series') minutes: tell it
                publish.announce = announcement(stamp, minutes)
            publish.commit()
        except BaseException:
            publish.abort()
            raise
        compact(data_dir, IMPORT_WRITER, stamper, fan_in=config.compaction_min_files, merge_closed=False)
    report.seconds = time.perf_counter() - started
    return report


@dataclass(frozen=True, slots=True)
class _Group:
    """One (symbol, interval) group's bars to write: the changed ones and the resampled buckets."""

    symbol: str
    rows: int  # bars read
    written: int  # bars changed or new
    resampled: int
    staged: list[tuple[str, pl.DataFrame]]  # (interval, versioned bars) to write


def _prepare(
    key: tuple[str, str], bars: pl.DataFrame, stored: _Stored, intervals: Sequence[str], stamp: int
) -> _Group:
    """Compare a group with what is stored and resample its changed minutes (on a worker thread)."""
    symbol, interval = key
    changed = _changed(bars, stored, symbol, interval)
    derived = _resampled(changed, stored, symbol, intervals) if interval == "1m" else {}
    staged = [(iv, with_version(frame, stamp)) for iv, frame in [(interval, changed), *derived.items()] if frame.height]
    return _Group(symbol, bars.height, changed.height, sum(f.height for f in derived.values()), staged)


def _minute_range(group: _Group) -> dict[str, tuple[int, int]]:
    opens = [frame.get_column("open_time") for interval, frame in group.staged if interval == "1m"]
    return {group.symbol: (min(int(o.min()) for o in opens), max(int(o.max()) for o in opens))} if opens else {}


def _in_order(futures: Iterator[Future[_Group]], *, ahead: int) -> Iterator[_Group]:
    """The futures' results in submission order, keeping up to ``ahead`` of them running."""
    running: deque[Future[_Group]] = deque()
    for future in futures:
        running.append(future)
        if len(running) > ahead:
            yield running.popleft().result()
    while running:
        yield running.popleft().result()


def _by_symbol(groups: Iterator[_Group]) -> Iterator[list[_Group]]:
    """The groups of one symbol at a time (they arrive sorted by symbol)."""
    for _, run in itertools.groupby(groups, key=lambda group: group.symbol):
        yield list(run)


def _per_interval(staged: list[tuple[str, pl.DataFrame]]) -> Iterator[pl.DataFrame]:
    """One symbol's staged rows per interval, one row per open time, sorted by open time.

    An interval staged twice (a 5m archive beside the 5m bars resampled from imported
    minutes) keeps per key the larger version: the exchange's bar.
    """
    by_interval: dict[str, list[pl.DataFrame]] = {}
    for interval, frame in staged:
        by_interval.setdefault(interval, []).append(frame)
    for interval in sorted(by_interval):
        parts = by_interval[interval]
        yield parts[0] if len(parts) == 1 else latest(pl.concat(parts), PARTITION_KEY).sort("open_time")


def _reader(market: str) -> Callable[[ArchiveFile], pl.DataFrame]:
    """How an archive's rows become the dataset's: mark and index klines count their seconds (:func:`price_rows`)."""
    if market in ("mark", "index"):
        return lambda spec: price_rows(read_archive(spec))
    return read_archive


def _groups(
    groups: dict[tuple[str, str], list[ArchiveFile]], progress: Progress | None,
    read: Callable[[ArchiveFile], pl.DataFrame] = read_archive,
) -> Iterator[tuple[tuple[str, str], pl.DataFrame]]:
    """Each group's bars (one row per open time, later files winning), files read ahead in parallel.

    At most ``2 * cores`` files are parsed ahead of the group being processed, which bounds
    memory while decompression and parsing (which release the GIL) use every core.
    """
    specs = [spec for group in groups.values() for spec in group]
    with ThreadPoolExecutor(max_workers=_CORES) as pool:
        ahead: deque[Future[pl.DataFrame]] = deque()
        queue = iter(specs)
        for spec in itertools.islice(queue, 2 * _CORES):
            ahead.append(pool.submit(read, spec))
        for key, group in groups.items():
            frames = []
            for spec in group:
                frames.append(ahead.popleft().result())
                following = next(queue, None)
                if following is not None:
                    ahead.append(pool.submit(read, following))
                if progress is not None:
                    progress(spec)
            bars = pl.concat(frames) if len(frames) > 1 else frames[0]
            opens = bars.get_column("open_time").to_numpy()
            if not (opens[1:] > opens[:-1]).all():  # files overlap or arrive out of order
                bars = bars.unique(subset=["open_time"], keep="last", maintain_order=True).sort("open_time")
            yield key, bars


class _Stored:
    """What the dataset held of a symbol's range, read when the import compares and resamples.

    An interval with no published file when the import started is not read again: the
    import's own files are not published yet, and a first import of years of archives would
    otherwise list the partitions and read the journals six times per symbol for nothing.
    """

    def __init__(self, data_dir: Path, market: str, intervals: set[str]) -> None:
        self.data_dir, self.market = data_dir, market
        self.empty = {iv for iv in intervals if not scan_files(data_dir, iv, market=market)}

    def __call__(self, symbol: str, interval: str, start: int, end: int) -> pl.DataFrame:
        if interval in self.empty:
            return pl.DataFrame(schema=VERSIONED_SCHEMA)
        return read_versioned(self.data_dir, interval, symbols=[symbol], start_ms=start, end_ms=end, market=self.market)


def _changed(bars: pl.DataFrame, read: _Stored, symbol: str, interval: str) -> pl.DataFrame:
    """The bars whose key is not stored, or stored with other values."""
    if bars.is_empty():
        return bars
    lo, hi = int(bars.get_column("open_time").min()), int(bars.get_column("open_time").max())
    stored = read(symbol, interval, lo, hi + 1).select("open_time", *_VALUES)
    if stored.is_empty():  # nothing stored there yet (a first import): every bar is new
        return bars
    same = bars.join(stored, on=["open_time", *_VALUES], how="semi", nulls_equal=True)
    return bars.join(same.select("open_time"), on="open_time", how="anti")


def _resampled(
    minutes: pl.DataFrame, read: _Stored, symbol: str, intervals: Sequence[str]
) -> dict[str, pl.DataFrame]:
    """Per interval, every bucket the changed minutes touch, from stored plus new minutes, minus what is stored."""
    if minutes.is_empty() or not intervals:
        return {}
    opens = minutes.get_column("open_time").to_numpy()
    start = min(int(bucket_opens(opens[:1], iv)[0]) for iv in intervals)
    end = max(int(bucket_ends(bucket_opens(opens[-1:], iv), iv)[0]) for iv in intervals)
    stored = read(symbol, "1m", start, end).drop("version")
    if stored.is_empty():  # the buckets hold only these minutes: each bucket is touched
        known = minutes
    else:
        known = latest(pl.concat([stored, minutes]).with_row_index("version")).drop("version").sort("open_time")
    out = {}
    for interval, frame in resample_many(known, intervals).items():
        if not stored.is_empty():
            touched = pl.DataFrame({"open_time": bucket_opens(opens, interval)}).unique()
            frame = frame.join(touched, on="open_time", how="semi")
        stored_rows = read(symbol, interval, start, end)
        if stored_rows.is_empty():
            out[interval] = frame
            continue
        keep_stored = stored_rows.filter(pl.col("source") != "resample").select("open_time")
        same = frame.join(stored_rows.select("open_time", *_VALUES), on=["open_time", *_VALUES], how="semi")
        out[interval] = frame.join(pl.concat([keep_stored, same.select("open_time")]), on="open_time", how="anti")
    return out
