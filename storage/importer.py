"""Importing archives: validate every file, then publish all of their bars at once.

The importer writes as writer ``imp`` under its lock (concurrent imports queue; the live
service's shards are other writers). Per (symbol, interval) group it reads the files in
parallel (decompression and parsing release the GIL), keeps the bars that differ from what
is stored (so importing a file twice changes nothing, not even the file list), resamples
the 1m bars of every bucket it touched (stored minutes of those buckets included) and stages
them, writing one file per partition for every ``STAGE_ROWS`` bars. Only when every file has been read and validated does one publish make them all
visible; any error drops every staged file. A tiered compaction of the importer's files
then keeps the file count bounded.
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

from klinestore.config import StorageConfig
from storage.archive import ArchiveFile, describe, find_archives, read_archive
from storage.compaction import compact
from storage.frames import VERSIONED_SCHEMA, latest, version_expr
from storage.layout import IMPORT_WRITER, MARKETS, Stamper, dataset_root
from storage.locks import WriterLock
from storage.reader import read_versioned
from storage.resample import bucket_ends, bucket_opens, resample_many
from storage.txn import Publish, recover
from storage.writer import write_partitions

#: Bars staged in memory before they are written (as tmp files) to the publish.
STAGE_ROWS = 4_000_000
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
    """Import kline and aggTrades archives (files or directories) into ``data_dir``."""
    started = time.perf_counter()
    root = dataset_root(data_dir, market)
    specs = [describe(p, symbol=symbol, interval=interval) for p in find_archives(list(paths))]
    report = ImportReport(files=len(specs))
    groups: dict[tuple[str, str], list[ArchiveFile]] = {}
    for spec in specs:
        groups.setdefault((spec.symbol, spec.interval), []).append(spec)
    stamper = Stamper(IMPORT_WRITER)
    with WriterLock(data_dir, IMPORT_WRITER):
        recover(data_dir, IMPORT_WRITER, [dataset_root(data_dir, m) for m in MARKETS])
        stamp = stamper.next()
        publish = Publish(data_dir, IMPORT_WRITER, stamper)
        staged: list[pl.DataFrame] = []
        try:
            for (group_symbol, group_interval), bars in _groups(groups, progress):
                report.rows += bars.height
                changed = _changed(bars, data_dir, market, group_symbol, group_interval)
                report.unchanged += bars.height - changed.height
                report.written += changed.height
                staged.append(changed.with_columns(version_expr(stamp)))
                if group_interval == "1m":
                    derived = _resampled(changed, data_dir, market, group_symbol, config.resample_intervals)
                    staged.append(derived.with_columns(version_expr(stamp)))
                    report.resampled += derived.height
                if sum(f.height for f in staged) >= STAGE_ROWS:
                    write_partitions(publish, root, pl.concat(staged))
                    staged.clear()
            if staged:
                write_partitions(publish, root, pl.concat(staged))
            publish.commit()
        except BaseException:
            publish.abort()
            raise
        compact(data_dir, IMPORT_WRITER, stamper, fan_in=config.compaction_min_files, merge_closed=False)
    report.seconds = time.perf_counter() - started
    return report


def _groups(
    groups: dict[tuple[str, str], list[ArchiveFile]], progress: Progress | None
) -> Iterator[tuple[tuple[str, str], pl.DataFrame]]:
    """Each group's bars (one row per open time, later files winning), files read ahead in parallel.

    At most ``2 * cores`` files are parsed ahead of the group being processed, which bounds
    memory while decompression and parsing (which release the GIL) use every core.
    """
    specs = [spec for group in groups.values() for spec in group]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        ahead: deque[Future[pl.DataFrame]] = deque()
        queue = iter(specs)
        for spec in itertools.islice(queue, 2 * (os.cpu_count() or 2)):
            ahead.append(pool.submit(read_archive, spec))
        for key, group in groups.items():
            frames = []
            for spec in group:
                frames.append(ahead.popleft().result())
                following = next(queue, None)
                if following is not None:
                    ahead.append(pool.submit(read_archive, following))
                if progress is not None:
                    progress(spec)
            bars = pl.concat(frames)
            yield key, bars.unique(subset=["open_time"], keep="last", maintain_order=True).sort("open_time")


def _stored(data_dir: Path, market: str, symbol: str, interval: str, start: int, end: int) -> pl.DataFrame:
    return read_versioned(data_dir, interval, symbols=[symbol], start_ms=start, end_ms=end, market=market)


def _changed(bars: pl.DataFrame, data_dir: Path, market: str, symbol: str, interval: str) -> pl.DataFrame:
    """The bars whose key is not stored, or stored with other values."""
    if bars.is_empty():
        return bars
    lo, hi = int(bars.get_column("open_time").min()), int(bars.get_column("open_time").max())
    stored = _stored(data_dir, market, symbol, interval, lo, hi + 1).select("open_time", *_VALUES)
    same = bars.join(stored, on=["open_time", *_VALUES], how="semi", nulls_equal=True)
    return bars.join(same.select("open_time"), on="open_time", how="anti")


def _resampled(
    minutes: pl.DataFrame, data_dir: Path, market: str, symbol: str, intervals: Sequence[str]
) -> pl.DataFrame:
    """Every bucket the changed minutes touch, from stored plus new minutes, minus what is stored."""
    if minutes.is_empty() or not intervals:
        return pl.DataFrame(schema={k: v for k, v in VERSIONED_SCHEMA.items() if k != "version"})
    opens = minutes.get_column("open_time").to_numpy()
    start = min(int(bucket_opens(opens[:1], iv)[0]) for iv in intervals)
    end = max(int(bucket_ends(bucket_opens(opens[-1:], iv), iv)[0]) for iv in intervals)
    stored = _stored(data_dir, market, symbol, "1m", start, end).drop("version")
    known = latest(pl.concat([stored, minutes]).with_row_index("version")).drop("version").sort("open_time")
    out = []
    for interval, frame in resample_many(known, intervals).items():
        touched = pl.DataFrame({"open_time": bucket_opens(opens, interval)}).unique()
        frame = frame.join(touched, on="open_time", how="semi")
        stored_rows = _stored(data_dir, market, symbol, interval, start, end)
        keep_stored = stored_rows.filter(pl.col("source") != "resample").select("open_time")
        same = frame.join(stored_rows.select("open_time", *_VALUES), on=["open_time", *_VALUES], how="semi")
        out.append(frame.join(pl.concat([keep_stored, same.select("open_time")]), on="open_time", how="anti"))
    return pl.concat(out)
