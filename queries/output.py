"""Query results out: a table for people, CSV, JSON records, or Parquet.

Results arrive as a stream of Arrow batches and leave batch by batch (CSV, JSON, Parquet),
so a query returning millions of rows never holds them all. Times are ISO 8601 in UTC
(``2024-01-01T00:00:00.000Z``) in CSV and JSON; floats are printed in their shortest form
that reads back to the same double (``108153.4``, never ``108153.40000000001``).
"""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import IO, Literal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from klinestore.queries.cells import json_lines, parquet_schema, writable
from klinestore.queries.errors import QueryError
from klinestore.queries.files import atomic_output

Format = Literal["table", "csv", "json", "parquet"]
FORMATS: tuple[str, ...] = ("table", "csv", "json", "parquet")
DEFAULT_MAX_ROWS = 100
_ISO_UTC = "%Y-%m-%dT%H:%M:%S%.3fZ"
_ISO_NAIVE = "%Y-%m-%dT%H:%M:%S%.3f"
_MAX_WIDTH = 400


def write_result(
    reader: pa.RecordBatchReader,
    fmt: str,
    out: Path | None = None,
    *,
    stream: IO[str] | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> int:
    """Write every row of ``reader`` as ``fmt`` to ``out`` (atomically) or ``stream``; returns the row count.

    A value no writer can take is one :class:`QueryError`, never a traceback (or a Rust panic).
    """
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    try:
        return _write(reader, fmt, out, stream, max_rows)
    except _WRITER_ERRORS as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise QueryError(f"cannot write this result as {fmt}: {first.strip()[:300]}") from None


#: What Polars and pyarrow raise (or panic with) for a value they cannot write.
_WRITER_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, pa.ArrowException, ValueError,
                  OverflowError, TypeError)


def _write(reader: pa.RecordBatchReader, fmt: str, out: Path | None, stream: IO[str] | None, max_rows: int) -> int:
    if fmt == "parquet":
        if out is None:
            raise QueryError("--format parquet needs --out FILE (Parquet is not for a terminal)")
        with atomic_output(out) as tmp:
            return _write_parquet(reader, tmp)
    if out is not None:
        with atomic_output(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
            return _write_text(reader, fmt, handle, max_rows, terminal=False)
    target = stream if stream is not None else sys.stdout
    return _write_text(reader, fmt, target, max_rows, terminal=target.isatty())


def presentable(frame: pl.DataFrame) -> pl.DataFrame:
    """Times as ISO 8601 strings (UTC ones end in ``Z``), everything else as it is."""
    exprs = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is not None:
                exprs.append(pl.col(name).dt.convert_time_zone("UTC").dt.to_string(_ISO_UTC))
            else:
                exprs.append(pl.col(name).dt.to_string(_ISO_NAIVE))
    return frame.with_columns(exprs) if exprs else frame


def _write_text(reader: pa.RecordBatchReader, fmt: str, handle: IO[str], max_rows: int, *, terminal: bool) -> int:
    if fmt == "csv":
        return _write_csv(reader, handle)
    if fmt == "json":
        return _write_json(reader, handle)
    return _write_table(reader, handle, max_rows, terminal=terminal)


def _frames(reader: pa.RecordBatchReader, fmt: str) -> Iterable[pl.DataFrame]:
    for batch in reader:
        if batch.num_rows:
            yield presentable(pl.from_arrow(writable(batch, fmt)))  # type: ignore[arg-type]


def _write_csv(reader: pa.RecordBatchReader, handle: IO[str]) -> int:
    rows = 0
    header = True
    for frame in _frames(reader, "csv"):
        handle.write(frame.write_csv(include_header=header, float_scientific=False))
        header = False
        rows += frame.height
    if header:  # no rows: still say which columns there would have been
        handle.write(",".join(_quote_csv(name) for name in reader.schema.names) + "\n")
    return rows


def _write_json(reader: pa.RecordBatchReader, handle: IO[str]) -> int:
    rows = 0
    handle.write("[")
    for batch in reader:
        if not batch.num_rows:
            continue
        lines = json_lines(batch)
        if lines is None:
            lines = presentable(pl.from_arrow(batch)).write_ndjson().splitlines()  # type: ignore[arg-type]
        handle.write(("," if rows else "") + "\n" + ",\n".join(lines))
        rows += batch.num_rows
    handle.write("\n]\n" if rows else "]\n")
    return rows


def _write_parquet(reader: pa.RecordBatchReader, path: Path) -> int:
    rows = 0
    with pq.ParquetWriter(path, parquet_schema(reader.schema), compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(writable(batch, "parquet"))
            rows += batch.num_rows
    return rows


def _write_table(reader: pa.RecordBatchReader, handle: IO[str], max_rows: int, *, terminal: bool) -> int:
    shown: list[pl.DataFrame] = []
    kept = total = 0
    for batch in reader:  # read to the end: the count is worth knowing, and DuckDB needs the result drained
        total += batch.num_rows
        if kept < max_rows and batch.num_rows:
            part = pl.from_arrow(writable(batch.slice(0, max_rows - kept), "table"))
            shown.append(part)  # type: ignore[arg-type]
            kept += part.height
    frame = pl.concat(shown, how="diagonal_relaxed") if shown else pl.DataFrame(schema=dict.fromkeys(reader.schema.names,
                                                                                                  pl.String))
    table = _rich_table(frame, total)  # type: ignore[arg-type]
    width = shutil.get_terminal_size().columns if terminal else min(_needed_width(frame), _MAX_WIDTH)
    Console(file=handle, width=width, force_terminal=terminal, color_system="auto" if terminal else None).print(table)
    return total


def _rich_table(frame: pl.DataFrame, total: int) -> Table:
    numeric = {name for name, dtype in frame.schema.items() if dtype.is_numeric()}
    if total == 0:
        caption = "no rows"
    elif total > frame.height:
        caption = f"showing the first {frame.height:,} of {total:,} rows (--max-rows N for more, --format csv for all)"
    else:
        caption = f"{total:,} row{'s' if total != 1 else ''}"
    table = Table(caption=caption, caption_justify="left", header_style="bold", pad_edge=False)
    for name in frame.columns:
        table.add_column(name, justify="right" if name in numeric else "left", no_wrap=True, overflow="ellipsis")
    for row in frame.iter_rows():
        table.add_row(*(_cell(v) for v in row))
    return table


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return repr(value) if value == value else "NaN"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        micros = value.microsecond
        spec = "seconds" if micros == 0 else "milliseconds" if micros % 1000 == 0 else "microseconds"
        return value.isoformat(sep=" ", timespec=spec).removesuffix("+00:00")
    return str(value)


def _needed_width(frame: pl.DataFrame) -> int:
    widths = [len(name) for name in frame.columns]
    for row in frame.iter_rows():
        widths = [max(w, len(_cell(v))) for w, v in zip(widths, row)]
    return max(sum(widths) + 3 * len(widths) + 4, 60)


def _quote_csv(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\n') else name


def to_text(reader: pa.RecordBatchReader, fmt: str, *, max_rows: int = DEFAULT_MAX_ROWS) -> str:
    """The rendering of a result as a string (the REPL and tests)."""
    buffer = io.StringIO()
    _write_text(reader, fmt, buffer, max_rows, terminal=False)
    return buffer.getvalue()
