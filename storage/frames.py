"""Bars as Polars frames: the one in-memory columnar form every storage module passes around.

Two flavours of the same columns (``BAR_COLUMNS``, in the Parquet order):

* working frames keep ``open_time``/``close_time`` as Int64 UTC milliseconds (cheap integer
  arithmetic for bucketing and gap finding), optionally with the ``version`` column;
* public frames (what :func:`storage.read_bars` returns) carry them as ``Datetime("ms", "UTC")``,
  the type Parquet stores and DuckDB reads as ``TIMESTAMP WITH TIME ZONE``.

:func:`latest` is the single implementation of the dedup rule in Python (largest version per
key); the SQL relation in :mod:`klinestore.storage.reader` is its DuckDB twin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl
from msgspec.structs import astuple

from klinestore.core.schema import BAR_SCHEMA, EXCHANGE_SOURCES, Bar
from klinestore.storage.layout import EXCHANGE_RANK

BAR_COLUMNS: tuple[str, ...] = tuple(BAR_SCHEMA.names)
KEY: tuple[str, ...] = ("symbol", "interval", "open_time")
#: The key within one partition (one interval).
PARTITION_KEY: tuple[str, ...] = ("symbol", "open_time")
TIME = pl.Datetime("ms", "UTC")

MS_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(), "interval": pl.String(), "open_time": pl.Int64(), "close_time": pl.Int64(),
    "open": pl.Float64(), "high": pl.Float64(), "low": pl.Float64(), "close": pl.Float64(),
    "volume": pl.Float64(), "quote_volume": pl.Float64(), "trades": pl.Int64(),
    "taker_buy_volume": pl.Float64(), "taker_buy_quote_volume": pl.Float64(),
    "is_complete": pl.Boolean(), "source": pl.String(),
}
PUBLIC_SCHEMA: dict[str, pl.DataType] = {**MS_SCHEMA, "open_time": TIME, "close_time": TIME}
VERSIONED_SCHEMA: dict[str, pl.DataType] = {**MS_SCHEMA, "version": pl.Int64()}


def empty(*, public: bool = False, versioned: bool = False) -> pl.DataFrame:
    schema = PUBLIC_SCHEMA if public else MS_SCHEMA
    return pl.DataFrame(schema={**schema, "version": pl.Int64()} if versioned else schema)


def version_expr(stamp: int | pl.Expr) -> pl.Expr:
    """``rank << 60 | stamp`` for each row (exchange sources rank above ``resample``)."""
    stamp_expr = stamp if isinstance(stamp, pl.Expr) else pl.lit(stamp, pl.Int64)
    exchange = pl.col("source").is_in(sorted(EXCHANGE_SOURCES))
    return (pl.when(exchange).then(pl.lit(EXCHANGE_RANK, pl.Int64)).otherwise(0) + stamp_expr).alias("version")


def with_version(frame: pl.DataFrame, stamp: int) -> pl.DataFrame:
    """``frame`` plus its ``version`` column (:func:`version_expr` of one stamp), built eagerly:
    no trip through Polars' thread pool, which archive parsing may be keeping busy.

    A frame of one source (an archive's bars, a resampling) gets one repeated value: 6x
    cheaper than looking each row's source up.
    """
    source = frame.get_column("source")
    one_source = frame.height > 0 and bool((source == source[0]).all())
    exchange = [source[0] in EXCHANGE_SOURCES] if one_source else source.is_in(sorted(EXCHANGE_SOURCES)).to_numpy()
    version = pl.Series("version", np.where(exchange, np.int64(EXCHANGE_RANK + stamp), np.int64(stamp)), pl.Int64)
    return frame.hstack([version.new_from_index(0, frame.height) if one_source else version])


_BAR_ORDER: tuple[str, ...] = Bar.__struct_fields__


def from_bars(bars: Sequence[Bar], stamps: Iterable[int] | None = None) -> pl.DataFrame:
    """A working frame from Bar structs; with ``stamps`` (one per bar) it is versioned."""
    columns = list(zip(*map(astuple, bars))) if bars else [()] * len(_BAR_ORDER)
    frame = pl.DataFrame(dict(zip(_BAR_ORDER, columns)), schema={k: MS_SCHEMA[k] for k in _BAR_ORDER})
    frame = frame.select(BAR_COLUMNS)
    if stamps is not None:
        frame = frame.with_columns(pl.Series("stamp", list(stamps), pl.Int64)).with_columns(
            version_expr(pl.col("stamp"))
        ).drop("stamp")
    return frame


def to_bars(frame: pl.DataFrame) -> list[Bar]:
    """Bar structs from a working or public frame."""
    ms = to_ms(frame)
    return [Bar(**row) for row in ms.select(_BAR_ORDER).iter_rows(named=True)]


def to_ms(frame: pl.DataFrame) -> pl.DataFrame:
    """Times as Int64 ms (a no-op on working frames)."""
    if frame.schema["open_time"] == pl.Int64:
        return frame
    return frame.with_columns(pl.col("open_time", "close_time").dt.epoch("ms"))


def to_public(frame: pl.DataFrame) -> pl.DataFrame:
    """Times as UTC datetimes, columns in Parquet order, no ``version``."""
    frame = frame.select(BAR_COLUMNS)
    if frame.schema["open_time"] == TIME:
        return frame
    return frame.with_columns(pl.col("open_time", "close_time").cast(TIME))


def latest(frame: pl.DataFrame, key: Sequence[str] = KEY) -> pl.DataFrame:
    """One row per key: the one with the largest ``version`` (the storage-wide dedup rule).

    Duplicates are rare (a replayed flush, a compaction in its grace period, a correction),
    so one pass over 64-bit hashes of the key finds candidates (2x faster than comparing the
    keys themselves) and only those rows are resolved, exactly: a row flagged by a hash
    collision is the largest version of its own key and stays. Row order is not kept.
    """
    key = list(key)
    duplicated = frame.select(key).hash_rows().is_duplicated()
    if not duplicated.any():
        return frame
    contested = frame.filter(duplicated)
    winners = contested.filter(pl.col("version") == pl.col("version").max().over(key))
    return pl.concat([frame.filter(~duplicated), winners.unique(subset=key, keep="any")])


def sort_bars(frame: pl.DataFrame) -> pl.DataFrame:
    """Sorted by (symbol, open_time); one cheap pass skips the sort when it already is."""
    if frame.height < 2:
        return frame
    symbol, open_time = pl.col("symbol"), pl.col("open_time")
    ordered = frame.select(
        ((symbol > symbol.shift(1)) | ((symbol == symbol.shift(1)) & (open_time > open_time.shift(1)))).slice(1).all()
    ).item()
    return frame if ordered else frame.sort("symbol", "open_time")
