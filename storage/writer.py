"""Writing versioned bar frames into the dataset as new, sorted, zstd Parquet files.

Each call splits a frame by partition (interval, month), keeps one row per key (the largest
version), sorts by (symbol, open_time) and writes one file per partition through a
:class:`~storage.txn.Publish`, so several partitions appear at once or not at all.
Row groups of ``ROW_GROUP_ROWS`` rows keep per-symbol pruning tight: a month of 1m bars of
one symbol (44 640 rows) spans at most two row groups.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from storage.errors import DatasetError
from storage.frames import PARTITION_KEY, TIME, latest
from storage.layout import FileName, partition_dir
from storage.schema import BAR_SCHEMA
from storage.txn import Publish

ROW_GROUP_ROWS = 65_536
ZSTD_LEVEL = 3
#: The Parquet schema of a data file: the bar columns but ``interval`` (a Hive partition key:
#: Spark and pyarrow refuse a column that is both in the files and in the path) plus the version.
FILE_SCHEMA = BAR_SCHEMA.remove(BAR_SCHEMA.get_field_index("interval")).append(
    pa.field("version", pa.int64(), nullable=False)
)


def with_month(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the ``month`` partition value (YYYY-MM of the UTC open time)."""
    return frame.with_columns(
        pl.col("open_time").cast(TIME).dt.strftime("%Y-%m").alias("month")
    )


def write_partitions(publish: Publish, root: Path, frame: pl.DataFrame, *, generation: int = 0) -> int:
    """Stage one file per partition of a versioned working frame; return rows staged."""
    if frame.is_empty():
        return 0
    rows = 0
    for (interval, month), part in with_month(frame).partition_by(["interval", "month"], as_dict=True).items():
        part = latest(part.drop("month"), PARTITION_KEY).sort("symbol", "open_time")
        name = FileName(publish.stamper.next(), publish.writer, generation).name
        final = partition_dir(root, str(interval), str(month)) / name
        write_file(part, publish.new_file(final))
        rows += part.height
    return rows


def write_file(frames: pl.DataFrame | Iterable[pl.DataFrame], path: Path) -> int:
    """Write sorted working frames, in order, to ``path`` (a tmp name) and fsync it; return rows.

    Several frames (consecutive symbol ranges of a compaction) stream into one file, so a
    merge never holds a whole partition in memory.
    """
    rows = 0
    try:
        with open(path, "wb") as handle:
            with pq.ParquetWriter(
                handle, FILE_SCHEMA, compression="zstd", compression_level=ZSTD_LEVEL, write_statistics=True,
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
