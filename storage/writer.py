"""Writing versioned bar frames into the dataset as new, sorted, zstd Parquet files.

:func:`write_partitions` splits a frame by partition (interval, month), keeps one row per
key (the largest version), sorts by (symbol, open_time) and writes one file per partition
through a :class:`~klinestore.storage.txn.Publish`, so several partitions appear at once or not at
all. :class:`PartitionFiles` does the same for rows that arrive a symbol at a time (the
importer), encoding each file's row groups as they fill.

Row groups hold about one symbol-month each (:func:`row_group_rows`), so a query for one
symbol reads one or two row groups per month file and skips the rest by their statistics: a
month of 1m bars of one symbol (44 640 rows) spans at most two 65 536-row groups; 1h bars
(744 a month) go in 4 096-row groups rather than one group holding every symbol. Dictionary
encoding only where it pays (symbol, source), delta encoding for times and counts, and zstd
at the level that pays per column (:data:`ZSTD_LEVELS`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from klinestore.core.schema import BAR_SCHEMA
from klinestore.storage.errors import DatasetError
from klinestore.storage.frames import PARTITION_KEY, TIME, latest, sort_bars
from klinestore.storage.fsguard import create_new
from klinestore.storage.layout import FileName, is_yearly, partition_dir, partition_of, partition_span
from klinestore.storage.resample import interval_minutes
from klinestore.storage.txn import Publish

ROW_GROUP_ROWS = 65_536
#: Row-group writes a streamed file may have queued before its producer waits (see _StreamedFile).
WRITES_AHEAD = 2
MIN_ROW_GROUP_ROWS = 4_096
#: Sorted times and small counts shrink by a third with delta encoding (measured: 36 -> 26 B/bar).
_DELTA = {c: "DELTA_BINARY_PACKED" for c in ("open_time", "close_time", "trades", "version")}
ZSTD_LEVEL = 3
#: zstd level per column: 3 only where it shrinks real bars. On the real 1m bars of the shared
#: data, level 3 makes base volumes smaller than level 1 but not prices, and quote volumes do
#: not compress at either level, while level 1 encodes faster: ``python -m bench --only
#: storage`` encodes the shared spot BTCUSDT bars both ways ("real 1m bars: encode ...").
#: Any other column keeps :data:`ZSTD_LEVEL`.
ZSTD_LEVELS = {c: ZSTD_LEVEL if c in ("volume", "taker_buy_volume") else 1 for c in [*BAR_SCHEMA.names, "version"]}
#: The Parquet schema of a data file: the bar columns but ``interval`` (a Hive partition key:
#: Spark and pyarrow refuse a column that is both in the files and in the path) plus the version.
FILE_SCHEMA = BAR_SCHEMA.remove(BAR_SCHEMA.get_field_index("interval")).append(
    pa.field("version", pa.int64(), nullable=False)
)


def row_group_rows(interval: str) -> int:
    """Rows per row group for ``interval``: a symbol-month rounded up to a power of two, 4 096 to
    65 536 rows (1m 65 536, 5m 16 384, 15m 4 096), and 65 536 in the yearly partitions of 1h
    and longer.

    A month file is read by one-symbol queries that skip the other symbols' groups by their
    statistics (with monthly 1h files, 4 096-row groups made one symbol's SQL scan 2x faster
    than one group per month). A year file is opened by every SQL query over its interval,
    and DuckDB evaluates each of its row groups against the filter even when the year is
    outside the query's range, so there few large groups pay: ``bench --only history``, one
    symbol-year of 1h bars (50 symbols) with 10 years stored over 1 year stored, three runs
    each, SQL 1.49-1.70x with 8 192-row groups, 1.19-1.24x with 32 768, 1.14-1.28x with 65 536;
    the Python API unchanged (3.8-4.2 ms) and the one-year SQL query faster (7.1-7.9 ms
    against 7.4-10.7).
    """
    if is_yearly(interval):
        return ROW_GROUP_ROWS
    per_symbol = 44_640 // interval_minutes(interval)
    return min(ROW_GROUP_ROWS, max(MIN_ROW_GROUP_ROWS, 1 << (max(per_symbol, 1) - 1).bit_length()))


def write_partitions(publish: Publish, root: Path, frame: pl.DataFrame, *, generation: int = 0) -> int:
    """Stage one file per partition of a versioned working frame; return rows staged.

    Files are encoded in parallel (pyarrow releases the GIL), one per core.
    """
    if frame.is_empty():
        return 0
    jobs = []
    opened = pl.col("open_time").cast(TIME)
    yearly = [iv for iv in frame.get_column("interval").unique().to_list() if is_yearly(iv)]
    period = pl.when(pl.col("interval").is_in(yearly)).then(opened.dt.truncate("1y")).otherwise(opened.dt.truncate("1mo"))
    for (interval, start), part in frame.with_columns(period.alias("month")).partition_by(
        ["interval", "month"], as_dict=True
    ).items():
        part = unique_sorted(part.drop("month"))
        name = FileName(publish.stamper.next(), publish.writer, generation).name
        value = f"{start:%Y}" if is_yearly(str(interval)) else f"{start:%Y-%m}"
        final = partition_dir(root, str(interval), value) / name
        jobs.append((part, publish.new_file(final), str(interval)))
    if len(jobs) == 1:
        return write_file(*jobs[0])
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 2)) as pool:
        return sum(pool.map(lambda job: write_file(*job), jobs))


def unique_sorted(part: pl.DataFrame) -> pl.DataFrame:
    """One partition's rows sorted by (symbol, open_time), one per key (the largest version).

    Sorted first: then a duplicated key is two equal neighbours, found in one pass; only a
    partition that has any pays for :func:`~klinestore.storage.frames.latest`.
    """
    part = sort_bars(part)
    if part.height > 1:
        symbol, open_time = pl.col("symbol"), pl.col("open_time")
        twins = part.select(((symbol == symbol.shift(1)) & (open_time == open_time.shift(1))).any()).item()
        if twins:
            part = latest(part, PARTITION_KEY).sort("symbol", "open_time")
    return part


class PartitionFiles:
    """One new file per partition, fed one (symbol, interval) at a time in symbol order.

    Whenever a partition has a full row group it is encoded on ``pool`` (pyarrow releases
    the GIL) while the caller prepares the next rows; each file's writes run in order, one
    after the other. ``close`` writes the rest and fsyncs every file; the files stay tmp
    files of ``publish`` until it commits. After an error, ``discard`` waits for the
    writes in flight and closes the files (``publish.abort`` then deletes them).
    """

    def __init__(self, publish: Publish, root: Path, pool: Executor, *, generation: int = 0) -> None:
        self._publish, self._root, self._pool, self._generation = publish, root, pool, generation
        self._files: dict[tuple[str, str], _StreamedFile] = {}
        self.rows = 0

    def add(self, bars: pl.DataFrame) -> None:
        """Rows of one symbol and interval, sorted by open time, one per key, versioned.

        Each partition must receive its symbols in ascending order (a file is sorted by
        (symbol, open_time)); a symbol arriving out of order is a bug and raises.
        """
        if bars.is_empty():
            return
        interval = bars.item(0, "interval")
        opens = bars.get_column("open_time").to_numpy()
        lo = 0
        while lo < len(opens):
            month = partition_of(interval, int(opens[lo]))
            hi = int(np.searchsorted(opens, partition_span(month)[1]))
            key = (interval, month)
            if key not in self._files:
                name = FileName(self._publish.stamper.next(), self._publish.writer, self._generation).name
                tmp = self._publish.new_file(partition_dir(self._root, interval, month) / name)
                self._files[key] = _StreamedFile(tmp, self._pool, row_group_rows(interval))
            self._files[key].add(bars.slice(lo, hi - lo))
            lo = hi
        self.rows += bars.height

    def close(self) -> int:
        """Write every file to its end and fsync it; return the rows written."""
        futures = [f.close() for f in self._files.values()]
        for future in futures:
            future.result()
        return self.rows

    def discard(self) -> None:
        for file in self._files.values():
            file.discard()


class _StreamedFile:
    """A Parquet file written row group by row group, the writes chained in order on a pool.

    At most :data:`WRITES_AHEAD` writes wait in a file's chain: a caller that gets further
    ahead waits for the oldest. One file's writes cannot run in parallel, so without the
    bound the 1m file's chain fell behind the readers and finished alone on one core (an
    import of 2.7 M bars ended with 0.6 s of it) while its pending row groups held memory (the
    import's peak RSS fell from 575 to 370 MB with the bound; its time did not change).
    """

    def __init__(self, path: Path, pool: Executor, group_rows: int) -> None:
        self.path, self._pool, self._group_rows = path, pool, group_rows
        self._pending: list[pl.DataFrame] = []
        self._rows = 0
        self._last_symbol = ""
        self._handle: BinaryIO | None = None
        self._writer: pq.ParquetWriter | None = None
        self._tail: Future[None] | None = None
        self._queued: deque[Future[None]] = deque()

    def add(self, frame: pl.DataFrame) -> None:
        symbol = frame.item(0, "symbol")
        if symbol <= self._last_symbol:
            raise DatasetError(f"{self.path}: {symbol} arrived after {self._last_symbol}")
        self._last_symbol = symbol
        self._pending.append(frame)
        self._rows += frame.height
        if self._rows >= self._group_rows:
            ready, self._pending = _split(self._pending, self._rows // self._group_rows * self._group_rows)
            self._rows = sum(f.height for f in self._pending)
            self._chain(lambda: self._write(ready))

    def close(self) -> Future[None]:
        rest, self._pending, self._rows = self._pending, [], 0
        return self._chain(lambda: self._finish(rest))

    def discard(self) -> None:
        if self._tail is not None:
            try:
                self._tail.result()
            except BaseException:  # noqa: BLE001 - the caller is already failing with its own error
                pass
        try:
            if self._writer is not None:
                self._writer.close()
        except (OSError, pa.ArrowException):
            pass
        finally:
            if self._handle is not None:
                self._handle.close()
            self._writer = self._handle = None

    def _chain(self, job: Callable[[], None]) -> Future[None]:
        before = self._tail

        def run() -> None:
            if before is not None:
                before.result()  # submitted earlier, so running or done: waiting never deadlocks
            job()

        self._tail = self._pool.submit(run)
        self._queued.append(self._tail)
        while len(self._queued) > WRITES_AHEAD:
            self._queued.popleft().result()
        return self._tail

    def _write(self, frames: list[pl.DataFrame]) -> None:
        try:
            if self._writer is None:
                self._handle = create_new(self.path)
                self._writer = parquet_writer(self._handle)
            # one conversion per write, not one per frame: its fixed cost (about 0.5 ms) was paid
            # 300 times in an import of 2.7 M bars, mostly for small frames of resampled bars
            frame = frames[0] if len(frames) == 1 else pl.concat(frames, rechunk=False)
            self._writer.write_table(to_arrow(frame), row_group_size=self._group_rows)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"cannot write {self.path}: {exc}") from exc

    def _finish(self, rest: list[pl.DataFrame]) -> None:
        if rest:
            self._write(rest)
        assert self._writer is not None and self._handle is not None  # every file got rows
        try:
            self._writer.close()
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"cannot write {self.path}: {exc}") from exc
        self._writer = self._handle = None


def _split(frames: list[pl.DataFrame], rows: int) -> tuple[list[pl.DataFrame], list[pl.DataFrame]]:
    """The first ``rows`` rows of ``frames`` and the rest, slicing (not copying) the frame between."""
    head: list[pl.DataFrame] = []
    for i, frame in enumerate(frames):
        if rows >= frame.height:
            head.append(frame)
            rows -= frame.height
            continue
        if rows:
            head.append(frame.slice(0, rows))
        return head, [frame.slice(rows), *frames[i + 1:]]
    return head, []


def parquet_writer(
    sink: BinaryIO | Path | str, schema: pa.Schema = FILE_SCHEMA, *, levels: Mapping[str, int] = ZSTD_LEVELS
) -> pq.ParquetWriter:
    """A Parquet writer of bars sorted by (symbol, open_time) with the dataset's encodings.

    Data files use :data:`FILE_SCHEMA`; an export of bars (``BAR_SCHEMA``) gets the same
    encodings: 3x faster to write than pyarrow's defaults, which try a dictionary on every
    float column. ``levels``: zstd level per column (the benchmark's level-3 baseline).
    """
    names = set(schema.names)
    return pq.ParquetWriter(
        sink, schema, compression="zstd", write_statistics=True,
        compression_level={c: levels.get(c, ZSTD_LEVEL) for c in names},
        write_page_checksum=True,  # a flipped byte is found by a checked read (storage.quarantine)
        use_dictionary=[c for c in ("symbol", "interval", "source") if c in names],
        column_encoding={c: e for c, e in _DELTA.items() if c in names},
        sorting_columns=[pq.SortingColumn(schema.get_field_index(c)) for c in PARTITION_KEY],
    )


def write_file(frames: pl.DataFrame | Iterable[pl.DataFrame], path: Path, interval: str) -> int:
    """Write sorted working frames, in order, to ``path`` (a tmp name) and fsync it; return rows.

    Several frames (consecutive symbol ranges of a compaction) stream into one file, so a
    merge never holds a whole partition in memory.
    """
    rows = 0
    try:
        with create_new(path) as handle:
            with parquet_writer(handle) as writer:
                for frame in [frames] if isinstance(frames, pl.DataFrame) else frames:
                    writer.write_table(to_arrow(frame), row_group_size=row_group_rows(interval))
                    rows += frame.height
            handle.flush()
            os.fsync(handle.fileno())
    except (OSError, pa.ArrowException) as exc:
        path.unlink(missing_ok=True)
        raise DatasetError(f"cannot write {path}: {exc}") from exc
    return rows


def to_arrow(frame: pl.DataFrame) -> pa.Table:
    """A working (or public) versioned frame as an Arrow table of exactly ``FILE_SCHEMA``.

    Column by column, with no Polars query: numbers pass without a copy and Int64 times are
    viewed as timestamps. Twice as fast as a select, a cast and a table cast (0.30 against
    0.60 ms for a symbol-month of 1m bars, 0.11 against 0.38 ms for a small resampled frame),
    and it holds the GIL for less of that time.
    """
    columns = []
    for field in FILE_SCHEMA:
        series = frame.get_column(field.name)
        if field.name in ("open_time", "close_time") and series.dtype != pl.Int64:
            series = series.cast(TIME)
        array = series.to_arrow()
        if array.type == pa.int64() and pa.types.is_timestamp(field.type):
            array = array.view(field.type)
        columns.append(array if array.type == field.type else array.cast(field.type))
    return pa.Table.from_arrays(columns, schema=FILE_SCHEMA)


def rows_of(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows
