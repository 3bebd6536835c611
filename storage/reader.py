"""Reading the dataset: the SQL relation, bars as Polars frames, warm restart, gaps.

Every reader applies the dedup rule (one row per (symbol, interval, open_time): the largest
``version``), so a file published by a compaction that has not yet deleted its inputs, a
replayed flush or a re-import never shows a key twice. Filters on the key columns go below
the dedup: DuckDB pushes ``symbol``/``open_time``/``interval`` predicates through the
per-key aggregate into the Parquet scan (checked with EXPLAIN in the tests), and the Polars
readers filter before they dedup, so a query for one symbol or one instant reads only what
it needs.

Time ranges are half-open, ``[start_ms, end_ms)``, on open times, in exchange (UTC) ms.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from klinestore.core.intervals import bar_open, check_interval, interval_ms, is_aligned, next_open
from klinestore.core.symbols import check_symbol
from klinestore.storage.frames import BAR_COLUMNS, TIME, VERSIONED_SCHEMA, from_bars, latest, to_public
from klinestore.storage.layout import GLOB, WRITER_LETTERS, data_files, dataset_root, list_partitions, partition_range, period_groups
from klinestore.storage.quarantine import read_skipping
from klinestore.storage.txn import retired_files
from klinestore.storage.wal import read_records

_DUCK_TYPES = {
    "symbol": "VARCHAR", "interval": "VARCHAR", "open_time": "TIMESTAMPTZ", "close_time": "TIMESTAMPTZ",
    "open": "DOUBLE", "high": "DOUBLE", "low": "DOUBLE", "close": "DOUBLE", "volume": "DOUBLE",
    "quote_volume": "DOUBLE", "trades": "BIGINT", "taker_buy_volume": "DOUBLE", "taker_buy_quote_volume": "DOUBLE",
    "is_complete": "BOOLEAN", "source": "VARCHAR", "version": "BIGINT",
}


#: The columns a key's winning row supplies (the rest are the key).
_VALUES = tuple(c for c in BAR_COLUMNS if c not in ("symbol", "interval", "open_time"))


def bars_relation_sql(
    data_dir: Path | str, interval: str | None = None, *, market: str = "um", skip: Collection[Path] = ()
) -> str:
    """A DuckDB ``SELECT`` of every bar, one row per key, the 15 bar columns (UTC timestamps).

    It reads the Parquet glob at query time, so files published later are seen by the same
    view; on an empty dataset it is an empty relation with the right types. Wrap it in a
    view: ``CREATE VIEW bars AS <this>``.

    The dedup is one aggregate per key: each value column's ``arg_max`` by ``version``.
    Every column comes from the same row, the one with the largest version: a write gives
    all its rows one version and holds a key once, so two rows of a key tie on the version
    only when they are copies of one row (a compaction's output and its inputs during the
    grace period, a replayed flush), and then either copy gives the same values. Filters on
    ``symbol``, ``open_time`` (and ``interval``) are filters on group keys, so DuckDB pushes
    them into the Parquet scan. One interval's view reads no Hive columns: its interval is a
    constant.

    ``skip`` names damaged files (:mod:`klinestore.storage.quarantine`) to leave out: when
    one is in this dataset the relation lists the other files now, instead of the glob.

    Measured against the window it replaces (``max(version) OVER key`` and
    ``arg_max(filename, version) OVER key``), on a month of 200 symbols' 1m bars with
    288 000 duplicated keys: one symbol's day 13 -> 9 ms, its month 67 -> 63 ms, one instant
    of every symbol 233 -> 208 ms, a GROUP BY symbol over everything 3.2 -> 1.1 s; and on a
    year of 50 symbols' 1h bars, one symbol 20 -> 13 ms. ``arg_max`` of one struct of the row
    is as fast on small results but 2.3x slower than the window on the full aggregation.
    """
    if interval is not None:
        check_interval(interval)
    root = dataset_root(Path(data_dir), market).resolve()
    pattern = GLOB.replace("interval=*", f"interval={interval}") if interval else GLOB
    if interval is None:
        scan = ("hive_partitioning = true, hive_types = {'interval': VARCHAR, 'month': VARCHAR}", "interval, ")
        stored = _DUCK_TYPES
    else:
        scan = ("hive_partitioning = false", "")
        stored = {c: t for c, t in _DUCK_TYPES.items() if c != "interval"}
    typed_empty = ", ".join(f"NULL::{t} AS {c}" for c, t in stored.items())
    source = _quoted(root / pattern)
    left_out = {Path(p).resolve() for p in skip}
    if any(p.is_relative_to(root) for p in left_out):
        files = [_quoted(p) for p in sorted(root.glob(pattern)) if p.resolve() not in left_out]
        source = f"[{', '.join(files)}]" if files else _quoted(root / f"{pattern}.none")  # matches nothing
    interval_column = "interval" if interval is None else f"'{interval}' AS interval"
    values = ", ".join(f"arg_max({c}, version) AS {c}" for c in _VALUES)
    return (
        f"SELECT symbol, {interval_column}, open_time, {values} FROM ("
        f"SELECT * FROM read_parquet({source}, {scan[0]}, allow_empty = true) "
        f"UNION ALL BY NAME SELECT {typed_empty} WHERE false"
        f") GROUP BY {scan[1]}symbol, open_time"
    )


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def scan_files(
    data_dir: Path, interval: str, *, market: str = "um", start_ms: int | None = None, end_ms: int | None = None
) -> list[Path]:
    """Data files of ``interval`` whose partition (month or year) can hold opens in ``[start_ms, end_ms)``."""
    low, high = partition_range(interval, start_ms, end_ms)
    partitions = [path for _, month, path in list_partitions(dataset_root(data_dir, market), interval)
                  if low <= month <= high]
    retired = retired_files(data_dir) if partitions else set()  # the journals are read only when needed
    return [p for path in partitions for _, p in data_files(path) if p not in retired]


def read_versioned(
    data_dir: Path,
    interval: str,
    *,
    symbols: Iterable[str] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    market: str = "um",
    wal: bool = False,
    ordered: bool = True,
) -> pl.DataFrame:
    """Deduplicated working frame (Int64 ms times, ``version`` kept) of one interval.

    Sorted by (symbol, open_time) unless ``ordered`` is off (the caller sorts once later).
    """
    def read(files: list[Path]) -> pl.DataFrame:
        lazy = pl.scan_parquet([str(f) for f in files], hive_partitioning=False)
        lazy = lazy.filter(_predicate(symbols, start_ms, end_ms, TIME)).with_columns(
            pl.lit(interval).alias("interval"), pl.col("open_time", "close_time").dt.epoch("ms")
        )
        return lazy.select(VERSIONED_SCHEMA.keys()).collect()

    parts: list[pl.DataFrame] = []
    stored = read_skipping(
        lambda: scan_files(data_dir, interval, market=market, start_ms=start_ms, end_ms=end_ms),
        lambda files: read(files) if files else None, f"{interval} bars under {dataset_root(data_dir, market)}",
    )
    if stored is not None:
        parts.append(stored)
    if wal and market != "spot":
        wal_rows = wal_frame(data_dir, market).filter(pl.col("interval") == interval)
        parts.append(wal_rows.filter(_predicate(symbols, start_ms, end_ms, pl.Int64)))
    if not parts:
        return pl.DataFrame(schema=VERSIONED_SCHEMA)
    frame = parts[0] if len(parts) == 1 else pl.concat([p.select(VERSIONED_SCHEMA.keys()) for p in parts])
    frame = latest(frame)
    return frame.sort("symbol", "open_time") if ordered else frame


def wal_frame(data_dir: Path, market: str = "um") -> pl.DataFrame:
    """Every bar in the WAL of every writer of a dataset (read-only), versioned like its future Parquet row."""
    bars, stamps = [], []
    wal_root = Path(data_dir) / "wal"
    letter = WRITER_LETTERS[market]
    for directory in sorted(d for d in wal_root.iterdir() if d.name.startswith(letter)) if wal_root.is_dir() else ():
        for stamp, batch in read_records(directory):
            bars.extend(batch)
            stamps.extend([stamp] * len(batch))
    return from_bars(bars, stamps)


def read_bars(
    data_dir: Path | str,
    symbol: str,
    interval: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    market: str = "um",
    wal: bool = False,
) -> pl.DataFrame:
    """Bars of one symbol and interval with open times in ``[start_ms, end_ms)``, oldest first.

    Columns as in Parquet (times ``Datetime("ms", "UTC")``), one row per open time. With
    ``wal=True`` bars still waiting in the WAL (at most a flush interval old) are included.
    """
    symbol = check_symbol(symbol)
    check_interval(interval)
    data_dir = Path(data_dir)
    if not wal:  # the common case of a closed range: one file, read as it is
        single = read_skipping(
            lambda: scan_files(data_dir, interval, market=market, start_ms=start_ms, end_ms=end_ms),
            lambda files: _one_file(files[0], symbol, interval, start_ms, end_ms) if len(files) == 1 else None,
            f"{interval} bars under {dataset_root(data_dir, market)}",
        )
        if single is not None:
            return single
    frame = read_versioned(data_dir, interval, symbols=[symbol], start_ms=start_ms, end_ms=end_ms, market=market, wal=wal)
    return to_public(frame)


def _one_file(path: Path, symbol: str, interval: str, start_ms: int | None, end_ms: int | None) -> pl.DataFrame:
    """One symbol's rows of a single data file, public columns, in the file's order.

    No dedup and no sort: a file holds each key once, sorted by (symbol, open_time) (every
    writer writes it so), and duplicates only arise across files. Saves a third of a one-year
    read of 1h bars (3.7 -> 2.5 ms, the rest is the Parquet scan).
    """
    lazy = pl.scan_parquet(str(path), hive_partitioning=False).filter(_predicate([symbol], start_ms, end_ms, TIME))
    return lazy.with_columns(pl.lit(interval).alias("interval")).select(BAR_COLUMNS).collect()


def load_recent(
    data_dir: Path | str,
    symbols: Sequence[str],
    sizes: Mapping[str, int],
    *,
    market: str = "um",
    wal: bool = True,
) -> dict[tuple[str, str], pl.DataFrame]:
    """The last ``sizes[interval]`` bars of each symbol, from Parquet plus the WAL (warm restart).

    Every (symbol, interval) asked for is in the result; a frame shorter than asked means
    the history is that short (the caller reports ``warming_up``). Reads only the months
    that the newest bars need, then goes further back just for the symbols still short.
    """
    data_dir = Path(data_dir)
    wanted = [check_symbol(s) for s in symbols]
    recent_wal = wal_frame(data_dir, market) if wal and market != "spot" else pl.DataFrame(schema=VERSIONED_SCHEMA)
    out: dict[tuple[str, str], pl.DataFrame] = {}
    for interval, size in sizes.items():
        check_interval(interval)
        frame = _recent(data_dir, market, interval, wanted, size, recent_wal.filter(pl.col("interval") == interval))
        groups = frame.partition_by("symbol", as_dict=True, include_key=True) if frame.height else {}
        empty = to_public(frame.clear())
        for symbol in wanted:
            part = groups.get((symbol,))
            out[(symbol, interval)] = to_public(part.sort("open_time")) if part is not None else empty
    return out


def _recent(data_dir: Path, market: str, interval: str, symbols: list[str], size: int, wal: pl.DataFrame) -> pl.DataFrame:
    top = _newest_open(data_dir, market, interval, wal)
    if top is None or size <= 0:
        return wal.clear()
    step = interval_ms(interval) if interval != "1M" else 28 * 86_400_000
    window_start = bar_open(max(top - (size - 1) * step, 0), interval)
    frame = latest(pl.concat([
        read_versioned(data_dir, interval, symbols=symbols, start_ms=window_start, market=market, ordered=False),
        wal.filter(pl.col("symbol").is_in(symbols) & (pl.col("open_time") >= window_start)),
    ]))
    counts = dict(frame.group_by("symbol").len().iter_rows())
    short = [s for s in symbols if counts.get(s, 0) < size]
    if short:  # a gap or a halted symbol: only these read further back
        older = read_versioned(data_dir, interval, symbols=short, end_ms=window_start, market=market, ordered=False)
        older = pl.concat([older, wal.filter(pl.col("symbol").is_in(short) & (pl.col("open_time") < window_start))])
        frame = latest(pl.concat([frame, older]))
    return frame.filter(pl.col("open_time").rank("ordinal", descending=True).over("symbol") <= size)


def _newest_open(data_dir: Path, market: str, interval: str, wal: pl.DataFrame) -> int | None:
    candidates = [int(wal.get_column("open_time").max())] if wal.height else []
    for paths in reversed(period_groups(dataset_root(data_dir, market), interval)):
        newest = read_skipping(
            lambda: [p for path in paths for _, p in data_files(path)],
            lambda files: pl.scan_parquet([str(f) for f in files], hive_partitioning=False)
            .select(pl.col("open_time").max().dt.epoch("ms")).collect().item() if files else None,
            f"{interval} bars in {paths[0]}",
        )
        if newest is not None:
            candidates.append(int(newest))
            break
    return max(candidates) if candidates else None


def last_open_times(
    data_dir: Path | str, interval: str, symbols: Iterable[str] | None = None, *, market: str = "um", wal: bool = True
) -> dict[str, int]:
    """The newest stored open time per symbol (Parquet plus WAL), newest month first."""
    data_dir = Path(data_dir)
    wanted = None if symbols is None else {check_symbol(s) for s in symbols}
    found: dict[str, int] = {}
    if wal and market != "spot":
        frame = wal_frame(data_dir, market).filter(pl.col("interval") == interval)
        for symbol, latest_open in frame.group_by("symbol").agg(pl.col("open_time").max()).iter_rows():
            found[symbol] = latest_open
    for paths in reversed(period_groups(dataset_root(data_dir, market), interval)):
        rows = read_skipping(
            lambda: [p for path in paths for _, p in data_files(path)], partial(_newest_per_symbol, wanted=wanted),
            f"{interval} bars in {paths[0]}",
        )
        for symbol, latest_open in rows:
            found[symbol] = max(found.get(symbol, latest_open), latest_open)
        if wanted is not None and wanted <= set(found):
            break
    return found if wanted is None else {s: t for s, t in found.items() if s in wanted}


def _newest_per_symbol(files: list[Path], wanted: set[str] | None) -> list[tuple[str, int]]:
    if not files:
        return []
    lazy = pl.scan_parquet([str(f) for f in files], hive_partitioning=False)
    if wanted is not None:
        lazy = lazy.filter(pl.col("symbol").is_in(sorted(wanted)))
    return lazy.group_by("symbol").agg(pl.col("open_time").max().dt.epoch("ms")).collect().rows()


def last_stored_open_time(
    data_dir: Path | str, symbol: str, interval: str, *, market: str = "um", wal: bool = True
) -> int | None:
    """Open time (UTC ms) of the newest stored bar of ``symbol``/``interval``, or None."""
    return last_open_times(data_dir, interval, [symbol], market=market, wal=wal).get(check_symbol(symbol))


def missing_after(last_open_ms: int | None, interval: str, now_ms: int) -> tuple[int, int] | None:
    """The bars missing between the last stored one and exchange time ``now_ms``.

    ``(first_missing_open, last_missing_open)``, like :func:`find_gaps`; the bar that
    contains ``now_ms`` is still open and not missing. None when nothing is missing (or
    nothing was ever stored: there is no gap to a history that does not exist).
    """
    if last_open_ms is None:
        return None
    first = next_open(last_open_ms, interval)
    current = bar_open(now_ms, interval)
    if first >= current:
        return None
    return first, _previous_open(current, interval)


def find_gaps(
    data_dir: Path | str, symbol: str, interval: str, start_ms: int, end_ms: int, *, market: str = "um",
    complete_only: bool = False,
) -> list[tuple[int, int]]:
    """Missing bars with open times in ``[start_ms, end_ms)`` as inclusive ``(first, last)`` open-time ranges.

    With ``complete_only`` a bar resampled from incomplete minutes (``is_complete`` false)
    counts as missing: it is not the exchange's bar.
    """
    found = find_gaps_many(data_dir, interval, {symbol: (start_ms, end_ms)}, market=market, complete_only=complete_only)
    return found[check_symbol(symbol)]


def find_gaps_many(
    data_dir: Path | str, interval: str, ranges: Mapping[str, tuple[int, int]], *, market: str = "um",
    complete_only: bool = False,
) -> dict[str, list[tuple[int, int]]]:
    """:func:`find_gaps` for several symbols of one interval, each with its own ``[start, end)``, in one scan."""
    wanted = {check_symbol(s): r for s, r in ranges.items()}
    if not wanted:
        return {}
    frame = read_versioned(
        Path(data_dir), interval, symbols=list(wanted), start_ms=min(r[0] for r in wanted.values()),
        end_ms=max(r[1] for r in wanted.values()), market=market, ordered=False,
    )
    if complete_only:
        frame = frame.filter(pl.col("is_complete"))
    present = {s: np.sort(g.get_column("open_time").to_numpy())
               for (s,), g in frame.partition_by("symbol", as_dict=True).items()} if frame.height else {}
    empty = np.zeros(0, dtype=np.int64)
    return {s: gaps_among(present.get(s, empty), interval, start, end) for s, (start, end) in wanted.items()}


def gaps_among(present: np.ndarray, interval: str, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """The open times in ``[start_ms, end_ms)`` not in ``present`` (unique open times, ms), as
    inclusive ``(first, last)`` ranges: the gap finder behind :func:`find_gaps`, for callers
    that already hold the bars (or count some of them, incomplete ones, as missing)."""
    expected = expected_opens(start_ms, end_ms, interval)
    missing = np.setdiff1d(expected, present, assume_unique=True)
    if missing.size == 0:
        return []
    position = np.searchsorted(expected, missing)
    breaks = np.flatnonzero(np.diff(position) != 1)
    firsts = np.concatenate(([0], breaks + 1))
    lasts = np.concatenate((breaks, [missing.size - 1]))
    return [(int(missing[a]), int(missing[b])) for a, b in zip(firsts, lasts)]


def expected_opens(start_ms: int, end_ms: int, interval: str) -> np.ndarray:
    """Every open time of ``interval`` in ``[start_ms, end_ms)``, ascending (int64 ms)."""
    first = start_ms if is_aligned(start_ms, interval) else next_open(bar_open(start_ms, interval), interval)
    if interval != "1M":
        return np.arange(first, end_ms, interval_ms(interval), dtype=np.int64)
    opens = []
    while first < end_ms:
        opens.append(first)
        first = next_open(first, interval)
    return np.array(opens, dtype=np.int64)


def _previous_open(open_ms: int, interval: str) -> int:
    return bar_open(open_ms - 1, interval)


def _predicate(
    symbols: Iterable[str] | None, start_ms: int | None, end_ms: int | None, time_type: pl.DataType
) -> pl.Expr:
    """Filter on the stored columns' own types, so Polars can prune row groups by statistics."""
    predicate = pl.lit(True)
    if symbols is not None:
        predicate &= pl.col("symbol").is_in(sorted(set(symbols)))
    if start_ms is not None:
        predicate &= pl.col("open_time") >= pl.lit(start_ms).cast(time_type)
    if end_ms is not None:
        predicate &= pl.col("open_time") < pl.lit(end_ms).cast(time_type)
    return predicate
