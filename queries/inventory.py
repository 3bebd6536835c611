"""What is stored: per symbol and interval the first and last bar, the count and the holes.

``klinestore list`` and the "nothing stored" errors of export and chart read this. Counts are
exact (the dedup rule of every reader) and come from the Parquet footers where they settle
the answer:

* a row group whose ``symbol`` statistics have min == max holds one symbol: its
  ``open_time`` statistics are the first and last bar, its row count the bars (a file holds
  a key once). A row group of several symbols (the writer's groups are a power of two rows,
  so most hold the end of one symbol and the start of the next) has its ``symbol`` and
  ``open_time`` columns read, nothing else; with ``symbol=`` the statistics skip the rest;
* several files of one symbol in one month partition whose open-time ranges do not overlap
  hold distinct bars (a live service's flushes: each holds newer bars), so the counts add;
* overlapping ranges (a re-import, resampled and exchange bars of one key, a replayed
  flush) are counted as distinct open times of that symbol's rows.

Months never share a key (the partition is the open time's month), so months add up. Like
``klinestore sql``, it sees what is in Parquet: bars still in the WAL appear after the next
flush (``storage.flush_interval``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from klinestore.core.intervals import check_interval, interval_sort_key
from klinestore.core.symbols import check_symbol
from klinestore.queries.errors import QueryError
from klinestore.queries.gaps import run_length
from klinestore.queries.times import iso
from klinestore.storage import Dataset, retired_files


@dataclass(frozen=True, slots=True)
class Series:
    """One stored symbol and interval: open times of the first and last bar (UTC ms), bars held."""

    symbol: str
    interval: str
    first_ms: int
    last_ms: int
    bars: int

    @property
    def missing(self) -> int:
        """Bars absent between the first and the last one."""
        return run_length(self.first_ms, self.last_ms, self.interval) - self.bars

    def row(self) -> dict[str, object]:
        return {"symbol": self.symbol, "interval": self.interval, "first": iso(self.first_ms),
                "last": iso(self.last_ms), "bars": self.bars, "missing": self.missing}


_ATTEMPTS = 3


@dataclass(slots=True)
class _Span:
    """One file's rows of one symbol: open-time range and count."""

    path: Path
    low: int
    high: int
    rows: int


def require_data_dir(data_dir: Path | str) -> Path:
    """``data_dir`` if it is a directory, else a :class:`QueryError` naming it."""
    path = Path(data_dir)
    if not path.is_dir():
        raise QueryError(f"no data directory at {path} (give --data-dir or set KLINESTORE_DATA_DIR)")
    return path


def inventory(
    data_dir: Path | str, *, market: str = "um", symbol: str | None = None, interval: str | None = None
) -> list[Series]:
    """Every stored (symbol, interval) of ``market``, optionally one symbol or interval, sorted."""
    data_dir = require_data_dir(data_dir)
    wanted = check_symbol(symbol) if symbol else None
    iv_filter = check_interval(interval) if interval else None
    for attempt in range(_ATTEMPTS):
        try:
            return _inventory(data_dir, market, wanted, iv_filter)
        except FileNotFoundError as exc:  # compacted away after its grace period while we read: list again
            if attempt == _ATTEMPTS - 1:
                raise QueryError(f"files keep vanishing under {data_dir} (a compaction?): {exc}") from None
    return []


def _inventory(data_dir: Path, market: str, wanted: str | None, interval: str | None) -> list[Series]:
    retired = retired_files(data_dir)  # compacted away, still readable for a grace period: not counted twice
    totals: dict[tuple[str, str], list[int]] = {}
    for partition in Dataset(data_dir, market).partitions(interval):
        iv, files = partition.interval, [p for p in partition.files() if p not in retired]
        for sym, (low, high, rows) in _partition_counts(files, wanted).items():
            seen = totals.setdefault((sym, iv), [low, high, 0])
            seen[0], seen[1], seen[2] = min(seen[0], low), max(seen[1], high), seen[2] + rows
    out = [Series(sym, iv, low, high, rows) for (sym, iv), (low, high, rows) in totals.items() if rows]
    return sorted(out, key=lambda s: (s.symbol, interval_sort_key(s.interval)))


def _partition_counts(files: list[Path], wanted: str | None) -> dict[str, tuple[int, int, int]]:
    """Per symbol in one month partition: (first open, last open, bars)."""
    spans: dict[str, list[_Span]] = defaultdict(list)
    for path in files:
        try:
            found = _file_spans(path, wanted)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
            raise QueryError(f"cannot read {path}: {exc}") from None
        for sym, span in found.items():
            spans[sym].append(span)
    out: dict[str, tuple[int, int, int]] = {}
    overlapping: list[str] = []
    for sym, parts in spans.items():
        parts.sort(key=lambda s: s.low)
        if all(a.high < b.low for a, b in zip(parts, parts[1:])):
            out[sym] = (parts[0].low, max(p.high for p in parts), sum(p.rows for p in parts))
        else:
            overlapping.append(sym)
    if overlapping:
        out.update(_distinct(sorted({s.path for sym in overlapping for s in spans[sym]}), overlapping))
    return out


def _file_spans(path: Path, wanted: str | None) -> dict[str, _Span]:
    """Each symbol's span in one file: from the footer for a row group of one symbol, else from
    the row group's ``symbol`` and ``open_time`` columns (a file holds a key once, so rows add up)."""
    meta = pq.read_metadata(path)
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    sym_col, time_col = names.index("symbol"), names.index("open_time")
    found: dict[str, _Span] = {}
    to_read: list[int] = []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        sym_stats, time_stats = group.column(sym_col).statistics, group.column(time_col).statistics
        if (sym_stats is None or time_stats is None or not sym_stats.has_min_max or not time_stats.has_min_max
                or time_stats.physical_type != "INT64"):
            to_read.append(g)
            continue
        low_sym, high_sym = _text(sym_stats.min), _text(sym_stats.max)
        if wanted is not None and not low_sym <= wanted <= high_sym:
            continue  # pruned by the statistics, like a query would
        if low_sym != high_sym:
            to_read.append(g)
            continue
        _add(found, path, low_sym, int(time_stats.min_raw), int(time_stats.max_raw), group.num_rows)
    if to_read:
        table = pq.ParquetFile(path, read_dictionary=["symbol"]).read_row_groups(to_read, columns=["symbol", "open_time"])
        for batch in table.to_batches():
            for sym, low, high, rows in _runs(batch):
                if wanted is None or sym == wanted:
                    _add(found, path, sym, low, high, rows)
    return found


def _runs(batch: pa.RecordBatch) -> list[tuple[str, int, int, int]]:
    """(symbol, first, last, rows) of each run of one symbol in a batch, without hashing a row.

    Rows are sorted by symbol, so a run is a symbol's rows; a symbol in two runs (a file from
    elsewhere) is merged by the caller, and still counted once per row.
    """
    symbols = batch.column(0)
    if not pa.types.is_dictionary(symbols.type):
        symbols = symbols.dictionary_encode()
    codes = symbols.indices.to_numpy(zero_copy_only=False)
    if codes.size == 0:
        return []
    times = batch.column(1).cast(pa.int64()).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    lows, highs = np.minimum.reduceat(times, starts), np.maximum.reduceat(times, starts)
    counts = np.diff(np.r_[starts, codes.size])
    names = symbols.dictionary.to_pylist()
    return [(names[codes[a]], int(lo), int(hi), int(n)) for a, lo, hi, n in zip(starts, lows, highs, counts)]


def _add(found: dict[str, _Span], path: Path, sym: str, low: int, high: int, rows: int) -> None:
    span = found.get(sym)
    if span is None:
        found[sym] = _Span(path, low, high, rows)
    else:
        span.low, span.high, span.rows = min(span.low, low), max(span.high, high), span.rows + rows


def _text(value: object) -> str:
    return value if isinstance(value, str) else bytes(value).decode()  # type: ignore[arg-type]


def _distinct(files: list[Path], symbols: list[str]) -> dict[str, tuple[int, int, int]]:
    """(first, last, distinct open times) per symbol from the rows of ``files`` (overlapping writes)."""
    lazy = pl.scan_parquet([str(f) for f in files], hive_partitioning=False).select("symbol", "open_time")
    try:
        frame = lazy.filter(pl.col("symbol").is_in(symbols)).group_by("symbol").agg(
            pl.col("open_time").min().dt.epoch("ms").alias("low"), pl.col("open_time").max().dt.epoch("ms").alias("high"),
            pl.col("open_time").n_unique().alias("rows"),
        ).collect()
    except FileNotFoundError:
        raise
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise QueryError(f"cannot read {len(files)} files under {files[0].parent}: {exc}") from None
    return {sym: (int(low), int(high), int(rows)) for sym, low, high, rows in frame.iter_rows()}


def require_series(data_dir: Path | str, symbol: str, interval: str, *, market: str = "um") -> Series:
    """The stored series of ``symbol``/``interval``, or a :class:`QueryError` that says what is stored instead.

    A symbol or interval never stored is a mistake to name, not a range of missing bars.
    """
    symbol, interval = check_symbol(symbol), check_interval(interval)
    found = inventory(data_dir, market=market, symbol=symbol, interval=interval)
    if found:
        return found[0]
    raise QueryError(f"no {symbol} {interval} bar is stored in {data_dir}{_market_name(market)}: "
                     + _what_is_stored(Path(data_dir), symbol, interval, market))


def _what_is_stored(data_dir: Path, symbol: str, interval: str, market: str) -> str:
    stored = inventory(data_dir, market=market)
    intervals = [s.interval for s in stored if s.symbol == symbol]
    if intervals:
        return f"{symbol} is stored at {', '.join(intervals)}"
    for other in (m for m in Dataset.MARKETS if m != market):
        if inventory(data_dir, market=other, symbol=symbol):
            return f"{symbol} is in the {other} dataset (add --market {other})"
    if not stored:
        return "nothing is stored there yet (klinestore run, import or download fill it)"
    symbols = sorted({s.symbol for s in stored})
    shown = ", ".join(symbols[:8]) + (f" and {len(symbols) - 8} more" if len(symbols) > 8 else "")
    return f"no bar of {symbol} at any interval (stored symbols: {shown}; see klinestore list)"


def _market_name(market: str) -> str:
    return "" if market == "um" else f" ({market})"
