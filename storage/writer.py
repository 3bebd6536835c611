"""Writing versioned bar frames into the dataset as new, sorted, zstd Parquet files.

Each call splits a frame by partition (interval, month), keeps one row per key (the largest
version), sorts by (symbol, open_time) and writes one file per partition through a
:class:`~storage.txn.Publish`, so several partitions appear at once or not at all.
Row groups of ``ROW_GROUP_ROWS`` rows keep per-symbol pruning tight: a month of 1m bars of
one symbol (44 640 rows) spans at most two row groups. Dictionary encoding only where it pays
(symbol, source), delta encoding for times and counts, zstd level 3.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from storage.errors import DatasetError
from storage.frames import PARTITION_KEY, TIME, latest, sort_bars
from storage.fsguard import create_new
from storage.layout import FileName, partition_dir
from storage.schema import BAR_SCHEMA
from storage.txn import Publish

ROW_GROUP_ROWS = 65_536
#: Sorted times and small counts shrink by a third with delta encoding (measured: 36 -> 26 B/bar).
_DELTA = {c: "DELTA_BINARY_PACKED" for c in ("open_time", "close_time", "trades", "version")}
ZSTD_LEVEL = 3
#: The Parquet schema of a data file: the bar columns but ``interval`` (a Hive partition key:
#: Spark and pyarrow refuse a column that is both in the files and in the path) plus the version.
FILE_SCHEMA = BAR_SCHEMA.remove(BAR_SCHEMA.get_field_index("interval")).append(
    pa.field("version", pa.int64(), nullable=False)
)




def write_partitions(publish: Publish, root: Path, frame: pl.DataFrame, *, generation: int = 0) -> int:
    """Stage one file per partition of a versioned working frame; return rows staged.

    Files are encoded in parallel (pyarrow releases the GIL), one per core.
    """
    if frame.is_empty():
        return 0
    jobs = []
    month = pl.col("open_time").cast(TIME).dt.truncate("1mo").alias("month")
    for (interval, start), part in frame.with_columns(month).partition_by(["interval", "month"], as_dict=True).items():
        part = sort_bars(latest(part.drop("month"), PARTITION_KEY))
        name = FileName(publish.stamper.next(), publish.writer, generation).name
        final = partition_dir(root, str(interval), f"{start:%Y-%m}") / name
        jobs.append((part, publish.new_file(final)))
    if len(jobs) == 1:
        return write_file(*jobs[0])
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 2)) as pool:
        return sum(pool.map(lambda job: write_file(*job), jobs))


def write_file(frames: pl.DataFrame | Iterable[pl.DataFrame], path: Path) -> int:
    """Write sorted working frames, in order, to ``path`` (a tmp name) and fsync it; return rows.

    Several frames (consecutive symbol ranges of a compaction) stream into one file, so a
    merge never holds a whole partition in memory.
    """
    rows = 0
    try:
        with create_new(path) as handle:
            with pq.ParquetWriter(
                handle, FILE_SCHEMA, compression="zstd", compression_level=ZSTD_LEVEL, write_statistics=True,
                use_dictionary=["symbol", "source"], column_encoding=_DELTA,
                sorting_columns=[pq.SortingColumn(0), pq.SortingColumn(1)],
            ) as writer:
                for frame in [frames] if isinstance(frames, pl.DataFrame) else frames:
                    writer.write_table(to_arrow(frame), row_group_size=ROW_GROUP_ROWS)
                    rows += frame.height
            handle.flush()
            os.fsync(handle.fileno())
    except (OSError, pa.ArrowException) as exc:
        path.unlink(missing_ok=True)
        raise DatasetError(f"cannot write {path}: {exc}") from exc
    return rows


def to_arrow(frame: pl.DataFrame) -> pa.Table:
    """A working (or public) versioned frame as an Arrow table of exactly ``FILE_SCHEMA``."""
    frame = frame.select(FILE_SCHEMA.names).with_columns(pl.col("open_time", "close_time").cast(TIME))
    return frame.to_arrow().cast(FILE_SCHEMA)


def rows_of(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows
