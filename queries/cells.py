"""Result columns that the fast writers cannot take, made writable (or refused in one line).

The output writers hand batches to Polars (CSV, JSON, tables) and pyarrow (Parquet), which
cover the types bars are made of. DuckDB can return many more, and several make those
writers raise or even panic: lists and structs in CSV, BLOBs in JSON, intervals, unions,
``infinity`` timestamps. Per column, by type (and for times, by value range):

* **text formats** (table, CSV): nested values become JSON text, BLOBs hex (``\\x`` prefix as
  DuckDB prints them), intervals and unions their text, out-of-range times ``infinity`` /
  ``-infinity`` (or the raw number);
* **JSON**: the same leaves, but lists, structs and maps stay JSON arrays and objects;
* **Parquet**: only what Parquet cannot hold (intervals, unions) becomes text;
* DuckDB's opaque types (``VARINT``...) are refused with a hint to CAST them.

Only the columns that need it take the slow path (Python values); the rest are untouched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from klinestore.queries.errors import QueryError

_UNIT_US = {"s": 1_000_000, "ms": 1000, "us": 1, "ns": 0.001}
#: Times Polars formats safely: years 1..9999 (DuckDB's infinities are far outside).
_LOW_US, _HIGH_US = -62_135_596_800_000_000, 253_402_300_799_999_999


def writable(batch: pa.RecordBatch, fmt: str) -> pa.RecordBatch:
    """``batch`` with every column the ``fmt`` writer cannot take as text (see the module docstring).

    For JSON, use :func:`json_lines` first: a batch it returns lines for is written by it.
    """
    columns, changed = [], False
    for field, column in zip(batch.schema, batch.columns):
        _refuse_opaque(field)
        if _needs_text(field.type, column, fmt):
            column = pa.array([_text(v) for v in _values(column)], pa.string())
            changed = True
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names) if changed else batch


def parquet_schema(schema: pa.Schema) -> pa.Schema:
    """The schema :func:`writable` gives batches of ``schema`` for Parquet (known before any row)."""
    return pa.schema([pa.field(f.name, pa.string()) if _has(f.type, _not_parquet) else f for f in schema])


def json_lines(batch: pa.RecordBatch) -> list[str] | None:
    """The rows of ``batch`` as JSON objects, one a line, when a column needs it; None when the
    fast writer takes the batch as it is."""
    for field in batch.schema:
        _refuse_opaque(field)
    if not any(_needs_text(f.type, c, "json") for f, c in zip(batch.schema, batch.columns)):
        return None
    names = batch.schema.names
    columns = [_values(c) for c in batch.columns]
    return [json.dumps({n: _json_value(col[i]) for n, col in zip(names, columns)}, ensure_ascii=False,
                       separators=(",", ":")) for i in range(batch.num_rows)]


def _refuse_opaque(field: pa.Field) -> None:
    if isinstance(field.type, pa.BaseExtensionType):
        name = getattr(field.type, "type_name", None) or str(field.type)
        raise QueryError(f"column {field.name!r} has DuckDB type {name}, which cannot be written; CAST it to VARCHAR")


def _is_nested(kind: pa.DataType) -> bool:
    return pa.types.is_nested(kind) or pa.types.is_union(kind)


def _needs_text(kind: pa.DataType, column: pa.Array, fmt: str) -> bool:
    if fmt == "parquet":
        return _has(kind, _not_parquet)
    if fmt in ("csv", "table") and _is_nested(kind):
        return True
    if _has(kind, lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or pa.types.is_interval(t) or pa.types.is_union(t) or pa.types.is_binary_view(t)):
        return True
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return not _in_range(column)
    return _is_nested(kind) and _has(kind, lambda t: pa.types.is_timestamp(t) or pa.types.is_date(t))


def _not_parquet(kind: pa.DataType) -> bool:
    return pa.types.is_interval(kind) or pa.types.is_union(kind)


def _has(kind: pa.DataType, test: Callable[[pa.DataType], bool]) -> bool:
    if test(kind):
        return True
    return any(_has(kind.field(i).type, test) for i in range(kind.num_fields)) if kind.num_fields else False


def _in_range(column: pa.Array) -> bool:
    kind = column.type
    raw = column.cast(pa.int64() if not pa.types.is_date32(kind) else pa.int32()).cast(pa.int64())
    bounds = pc.min_max(raw).as_py()
    if bounds["min"] is None:
        return True
    scale = 86_400_000_000 if pa.types.is_date32(kind) else 1000 if pa.types.is_date64(kind) else _UNIT_US[kind.unit]
    return _LOW_US <= bounds["min"] * scale and bounds["max"] * scale <= _HIGH_US


def _values(column: pa.Array) -> list[Any]:
    """Python values of ``column``; times outside Python's range come as ``infinity`` strings."""
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return [_time_value(column, i) for i in range(len(column))]
    try:
        return column.to_pylist()
    except (ValueError, OverflowError, pa.ArrowException):  # a time out of range inside a nested value
        return [_scalar(column[i]) for i in range(len(column))]


def _time_value(column: pa.Array, i: int) -> Any:
    try:
        return column[i].as_py()
    except (ValueError, OverflowError):
        raw = column.cast(pa.int64() if not pa.types.is_date32(column.type) else pa.int32())[i].as_py()
        return "infinity" if raw > 0 else "-infinity"


def _scalar(scalar: pa.Scalar) -> Any:
    try:
        return scalar.as_py()
    except (ValueError, OverflowError):
        return str(scalar)


def _text(value: Any) -> str | None:
    """One cell as text: JSON for nested values, ``\\x..`` hex for bytes."""
    if value is None:
        return None
    if isinstance(value, (list, dict, tuple)) and not isinstance(value, pa.MonthDayNano):
        return json.dumps(_json_value(value), ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    plain = _json_value(value)
    return plain if isinstance(plain, str) else json.dumps(plain)


def _json_value(value: Any) -> Any:
    """A Python value as something :func:`json.dumps` writes faithfully."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, pa.MonthDayNano):
        return _interval(value)
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if all(isinstance(item, tuple) and len(item) == 2 for item in value) and value and isinstance(value, list) \
                and all(isinstance(item[0], str) for item in value):  # a MAP arrives as (key, value) pairs
            return {k: _json_value(v) for k, v in value}
        return [_json_value(v) for v in value]
    if isinstance(value, datetime):  # as the fast writers print times: milliseconds, Z for UTC
        text = f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}"
        return text + "Z" if value.tzinfo is not None else text
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def _interval(value: pa.MonthDayNano) -> str:
    parts = []
    if value.months:
        parts.append(f"{value.months} month{'s' if abs(value.months) != 1 else ''}")
    if value.days:
        parts.append(f"{value.days} day{'s' if abs(value.days) != 1 else ''}")
    if value.nanoseconds or not parts:
        parts.append(str(timedelta(microseconds=value.nanoseconds / 1000)))
    return " ".join(parts)
