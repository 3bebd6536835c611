"""Compaction: a writer merges its own small files, so the file count stays bounded.

Policy, per partition and writer (``F`` = ``compaction_min_files``):

* **open partitions** (the newest month of an interval) are compacted *tier by tier*: files
  carry a generation (flush and import files are ``g0``); once a generation holds ``F`` files
  they are merged into one file of the next generation. A row is rewritten once per
  generation, about ``log_F(files written)`` times, never the whole month per run (which is
  what merging everything every 10 minutes would cost: a 200-symbol 1m month is ~9 M rows).
  Bound: at most ``(F - 1)`` files per generation, and ``ceil(log_F(writes)) + 1``
  generations: with F = 8 and a flush a minute, 44 640 writes a month, at most 7 × 7 = 49
  files, plus those written since the last run.
* **closed partitions** (a later month of that interval exists) are merged into **one file**
  per writer, once; a late bar adds a file that the next run folds in.

A merge reads its inputs one symbol range at a time (bounded memory), keeps the largest
version per key, writes one sorted file and publishes it with the inputs retired in the same
journal (:mod:`klinestore.storage.txn`). Killed at any point, it either never happened (the tmp file is
removed on recovery) or is finished by recovery; readers meanwhile may see an input and the
merged file together, and their dedup makes that invisible.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from klinestore.storage.errors import DatasetError
from klinestore.storage.frames import PARTITION_KEY, latest
from klinestore.storage.layout import DATASETS, FileName, Stamper, data_files, dataset_root, list_partitions
from klinestore.storage.quarantine import (
    READ_ERRORS,
    find_damaged,
    noted,
    one_line,
    quarantine,
    quarantine_writer,
    verified,
)
from klinestore.storage.txn import Publish, collect, pending_obsolete
from klinestore.storage.writer import write_file

#: Rows merged in memory at a time (a symbol range); bounds a merge's memory.
CHUNK_ROWS = 2_000_000


@dataclass(slots=True)
class CompactReport:
    partitions: int = 0  # partitions that had something to merge
    merged_files: int = 0  # input files merged
    written_files: int = 0
    rows: int = 0  # rows written into merged files
    deleted_files: int = 0  # retired files deleted after their grace period
    max_files: int = 0  # most files of this writer left in one partition
    details: list[str] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)  # damaged files moved aside (their records)

    def add(self, other: CompactReport) -> None:
        self.partitions += other.partitions
        self.merged_files += other.merged_files
        self.written_files += other.written_files
        self.rows += other.rows
        self.deleted_files += other.deleted_files
        self.max_files = max(self.max_files, other.max_files)
        self.details.extend(other.details)
        self.quarantined.extend(other.quarantined)


def compact(
    data_dir: Path, writer: str, stamper: Stamper, *, fan_in: int = 8, grace: float = 0.0, merge_closed: bool = True
) -> CompactReport:
    """Compact every partition of ``writer`` (the caller holds the writer's lock).

    ``merge_closed=False`` only merges full generations, even in closed partitions (the
    importer uses it, so importing day after day never rewrites a whole month each time).
    """
    report = CompactReport()
    report.quarantined = quarantine_writer(data_dir, writer, [dataset_root(data_dir, m) for m in DATASETS])
    before = len(pending_obsolete(data_dir, writer))
    collect(data_dir, writer)
    retired = pending_obsolete(data_dir, writer)
    report.deleted_files = before - len(retired)
    for market in DATASETS:
        root = dataset_root(data_dir, market)
        partitions = list_partitions(root)
        newest: dict[str, str] = {}
        for interval, month, _ in partitions:
            newest[interval] = max(newest.get(interval, month), month)
        for interval, month, path in partitions:
            closed = merge_closed and month < newest[interval]
            report.add(_compact_partition(data_dir, writer, stamper, path, interval, closed, fan_in, grace, retired))
    return report


def _compact_partition(
    data_dir: Path, writer: str, stamper: Stamper, path: Path, interval: str, closed: bool, fan_in: int, grace: float,
    retired: set[Path],
) -> CompactReport:
    report = CompactReport()
    files = [(name, p) for name, p in data_files(path, writer) if p not in retired]
    stamper.observe(max((name.stamp for name, _ in files), default=0))
    while (group := _next_group(files, closed, fan_in)):
        damaged = {p: error for _, p in group if (error := verified(p)) is not None}
        if damaged:  # set aside, never merged: a flipped bit would get fresh checksums
            for bad, error in damaged.items():
                record = quarantine(data_dir, bad, error)
                report.quarantined.extend([record] if record else [])
            files = [f for f in files if f[1] not in damaged]
            continue
        generation = max(name.generation for name, _ in group) + 1
        final = path / FileName(stamper.next(), writer, min(generation, 999)).name
        publish = Publish(data_dir, writer, stamper, grace=grace)
        try:
            rows = write_file(_merged_chunks([p for _, p in group]), publish.new_file(final), interval)
        except READ_ERRORS as exc:
            publish.abort()
            damaged = find_damaged(p for _, p in group)
            if not damaged:
                raise DatasetError(f"cannot compact {path}: {one_line(exc)}") from exc
            for bad in damaged:  # set aside, then merge the rest
                record = quarantine(data_dir, bad, noted(data_dir).get(bad.resolve(), one_line(exc)))
                report.quarantined.extend([record] if record else [])
            files = [f for f in files if f[1] not in damaged]
            continue
        publish.retire(p for _, p in group)
        publish.commit()
        report.partitions += 1
        report.merged_files += len(group)
        report.written_files += 1
        report.rows += rows
        report.details.append(f"{path.parent.name}/{path.name}: {len(group)} files -> {final.name} ({rows} rows)")
        retired.update(p for _, p in group)
        files = [f for f in files if f not in group] + [(FileName.parse(final.name), final)]  # type: ignore[list-item]
    report.max_files = len(files)
    return report


def _next_group(files: list[tuple[FileName, Path]], closed: bool, fan_in: int) -> list[tuple[FileName, Path]]:
    """The files to merge next: all of them in a closed partition, else a full generation."""
    if closed:
        return list(files) if len(files) > 1 else []
    by_generation: dict[int, list[tuple[FileName, Path]]] = {}
    for item in files:
        by_generation.setdefault(item[0].generation, []).append(item)
    for generation in sorted(by_generation):
        if len(by_generation[generation]) >= fan_in:
            return by_generation[generation]
    return []


def _merged_chunks(paths: list[Path]) -> Iterator[pl.DataFrame]:
    """The deduplicated rows of ``paths``, sorted, in symbol ranges of about CHUNK_ROWS rows."""
    sources = [str(p) for p in paths]
    counts = pl.scan_parquet(sources, hive_partitioning=False).group_by("symbol").len().sort("symbol").collect()
    chunk: list[str] = []
    rows = 0
    for symbol, n in counts.iter_rows():
        chunk.append(symbol)
        rows += n
        if rows >= CHUNK_ROWS:
            yield _read_symbols(sources, chunk)
            chunk, rows = [], 0
    if chunk:
        yield _read_symbols(sources, chunk)


def _read_symbols(sources: list[str], symbols: list[str]) -> pl.DataFrame:
    lazy = pl.scan_parquet(sources, hive_partitioning=False).filter(pl.col("symbol").is_in(symbols))
    frame = lazy.with_columns(pl.col("open_time", "close_time").dt.epoch("ms")).collect()
    return latest(frame, PARTITION_KEY).sort("symbol", "open_time")
