"""Damaged Parquet files: readers skip them, their writer moves them aside.

A file can be damaged behind the store's back (a disk error, a truncating copy, a person).
Real stores keep serving the rest and set the broken part aside (ClickHouse's
``detached/broken``); so does klinestore:

* **readers** (the SQL session, the Python readers, exports) that meet an unreadable file
  skip it with one warning naming it, and answer from the rest (:func:`read_skipping`,
  :func:`skipped`). What a reader found is remembered in this process (:func:`noted`),
  keyed by the file's size and mtime, so a file replaced under the same name is checked again;
* **its writer** (the shard's service, or ``klinestore compact`` holding the lock) moves it
  to ``<data_dir>/quarantine/<its relative path>`` with a record beside it
  (``<name>.json``: file, error, time, size) via :func:`quarantine`; the service raises an
  alert and records the bars it held as gaps, which the usual paths refill.

:func:`damage` is the check: cheap (size and the ``PAR1`` magic at both ends, then the footer)
unless ``deep``, which decodes every page with pyarrow and Polars: a flipped byte in the
middle of a file is found only by reading it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from klinestore.storage.errors import DatasetError
from klinestore.storage.fsguard import create_new
from klinestore.storage.layout import PARTITION_GLOBS, FileName
from klinestore.storage.txn import fsync_dir

log = logging.getLogger(__name__)
T = TypeVar("T")

QUARANTINE_DIR = "quarantine"
_MAGIC = b"PAR1"
#: Fresh listings a reader tries before giving up: a compaction can retire a listed file, a
#: damaged file is skipped; more than this many in a row is not a race.
_ATTEMPTS = 5
#: Errors a Parquet read raises for a damaged or vanished file (Polars panics on some).
READ_ERRORS: tuple[type[BaseException], ...] = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError,
                                               pa.ArrowException)

_noted: dict[Path, tuple[tuple[int, ...], str]] = {}
_healthy: dict[Path, tuple[int, ...] | None] = {}  # files that passed the cheap check, as they were then
_MAX_HEALTHY = 100_000
_noted_lock = threading.Lock()


def _stat_key(path: Path) -> tuple[int, ...] | None:
    """What changes when a file is rewritten or replaced (size first: the record's ``size``)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def damage(path: Path, *, deep: bool = False) -> str | None:
    """Why ``path`` cannot be read as Parquet, or None if it can (a vanished file is not damaged)."""
    try:
        size = path.stat().st_size
        if size < 12:
            return f"{size} bytes, too small to be a Parquet file"
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(size - 8)
            tail = handle.read(8)
        if head != _MAGIC or tail[4:] != _MAGIC:
            return "no Parquet magic bytes (truncated or overwritten)"
        if int.from_bytes(tail[:4], "little") > size - 12:
            return "footer length beyond the file (truncated)"
        if not deep:
            return None
        pq.read_table(path, page_checksum_verification=True)
        pl.read_parquet(path, hive_partitioning=False)
    except FileNotFoundError:
        return None
    except READ_ERRORS as exc:
        return one_line(exc)
    return None


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return text or type(exc).__name__


def note(path: Path, error: str) -> None:
    """Remember that ``path`` is damaged (this process), warning once per file version."""
    key = _stat_key(path)
    if key is None:
        return
    _healthy.pop(path, None)
    path = Path(path).resolve()
    with _noted_lock:
        known = _noted.get(path)
        _noted[path] = (key, error)
    if known is None or known[0] != key:
        log.warning("skipping unreadable Parquet file %s: %s", path, error)


def is_noted(path: Path) -> bool:
    with _noted_lock:
        known = _noted.get(Path(path).resolve())
    return known is not None and known[0] == _stat_key(path)


def noted(data_dir: Path) -> dict[Path, str]:
    """Damaged files under ``data_dir`` that a reader of this process met and that are still there."""
    root = Path(data_dir).resolve()
    with _noted_lock:
        items = list(_noted.items())
    return {p: error for p, (key, error) in items if p.is_relative_to(root) and _stat_key(p) == key}


def skipped(files: Iterable[Path]) -> list[Path]:
    """``files`` without the ones known to be damaged (cheap check; noting what it finds).

    A file that passed keeps passing while its size and mtime stay (one ``stat`` instead of
    reading its ends again).
    """
    out = []
    for path in files:
        if is_noted(path):
            continue
        key = _stat_key(path)
        if key is not None and _healthy.get(path) == key:
            out.append(path)
            continue
        error = damage(path)
        if error is not None:
            note(path, error)
            continue
        if len(_healthy) >= _MAX_HEALTHY:
            _healthy.clear()
        _healthy[path] = key
        out.append(path)
    return out


def verified(path: Path) -> str | None:
    """Why ``path`` fails its page checksums (a flipped bit Polars and DuckDB would read as a
    value), or None. Compaction verifies its inputs so it never rewrites a damaged value into
    a file with fresh checksums."""
    try:
        source = pq.ParquetFile(path, page_checksum_verification=True)
        for _ in source.iter_batches(batch_size=1 << 16):
            pass
    except FileNotFoundError:
        return None
    except READ_ERRORS as exc:
        return one_line(exc)
    return None


def find_damaged(files: Iterable[Path]) -> list[Path]:
    """Deep-check ``files`` (after a read failed); note and return the damaged ones."""
    found = []
    for path in files:
        error = damage(path, deep=True)
        if error is not None:
            note(path, error)
            found.append(path)
    return found


def read_skipping(list_files: Callable[[], list[Path]], read: Callable[[list[Path]], T], what: str) -> T:
    """``read(files)`` over a fresh listing, skipping damaged files and retrying when one vanished.

    A read fails for two reasons a reader can survive: a file is damaged (it is found by a
    deep check, noted, and left out of the next listing) or a compaction retired a listed
    file between the listing and the read (the next listing holds the merged file instead).
    Anything else is a :class:`DatasetError` naming ``what``.
    """
    error: BaseException | None = None
    for _ in range(_ATTEMPTS):
        files = skipped(list_files())
        try:
            return read(files)
        except READ_ERRORS as exc:
            error = exc
        vanished = any(not path.exists() for path in files)
        if not find_damaged(files) and not vanished:
            break
    raise DatasetError(f"cannot read {what}: {one_line(error)}") from error


def quarantine(data_dir: Path, path: Path, error: str) -> dict | None:
    """Move the damaged ``path`` to ``<data_dir>/quarantine/`` with a record beside it; the record.

    The caller holds the lock of the file's writer. None if the file is already gone.
    """
    data_dir = Path(data_dir).resolve()
    path = Path(path).resolve()
    relative = path.relative_to(data_dir)
    target = data_dir / QUARANTINE_DIR / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # the same name quarantined before (a re-import): keep both
        target = target.with_name(f"{target.stem}-{time.time_ns():x}{target.suffix}")
    key = _stat_key(path)
    record = {"file": str(relative), "quarantined_as": str(target.relative_to(data_dir)), "error": error,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "size": key[0] if key else None,
              **coverage(path)}
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    with create_new(target.with_name(target.name + ".json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(target.parent)
    fsync_dir(path.parent)
    log.warning("quarantined damaged file %s as %s: %s", relative, target.relative_to(data_dir), error)
    return record


def coverage(path: Path) -> dict:
    """What a damaged file may have held: its interval, and the open times (UTC ms) and symbols
    its footer's statistics name, else its whole month: the bars that may now be missing."""
    interval = path.parent.parent.name.partition("=")[2]
    month = path.parent.name.partition("=")[2]
    out: dict = {"interval": interval, "start_ms": None, "end_ms": None, "symbols": None}  # symbols: [first, last]
    try:
        year, number = (int(x) for x in month.split("-"))
        out["start_ms"] = int(datetime(year, number, 1, tzinfo=timezone.utc).timestamp() * 1000)
        following = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=timezone.utc)
        out["end_ms"] = int(following.timestamp() * 1000)
    except ValueError:
        pass
    try:
        meta = pq.read_metadata(path)
        names = meta.schema.names
        times, symbols = [], set()
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for column, values in (("open_time", times), ("symbol", None)):
                stats = group.column(names.index(column)).statistics
                if stats is None or not stats.has_min_max:
                    raise ValueError("no statistics")
                if values is None:
                    symbols.update((stats.min, stats.max))
                else:
                    values.extend((stats.min, stats.max))
        if times:
            out["start_ms"] = _ms(min(times))
            out["end_ms"] = _ms(max(times)) + 1
        if symbols:
            out["symbols"] = [str(min(symbols)), str(max(symbols))]  # rows are sorted by symbol
    except (*READ_ERRORS, ValueError):
        pass
    return out


def _ms(value: object) -> int:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)  # type: ignore[arg-type]


def quarantine_writer(data_dir: Path, writer: str, roots: Iterable[Path]) -> list[dict]:
    """Quarantine every damaged file of ``writer`` under ``roots`` (cheap check, plus what
    readers of this process found); the records written. The caller holds the writer's lock."""
    found = {p: e for p, e in noted(data_dir).items() if (n := FileName.parse(p.name)) and n.writer == writer}
    for root in roots:
        for path in (p for pattern in PARTITION_GLOBS for p in Path(root).glob(f"{pattern}/*-{writer}-g*.parquet")):
            error = damage(path)
            if error is not None:
                found.setdefault(path.resolve(), error)
    out = []
    for path, error in sorted(found.items()):
        record = quarantine(data_dir, path, error)
        if record is not None:
            out.append(record)
    return out


def records(data_dir: Path) -> list[dict]:
    """Every quarantine record under ``data_dir``, oldest first (what ``status`` shows)."""
    root = Path(data_dir) / QUARANTINE_DIR
    out = []
    for path in root.rglob("*.parquet.json") if root.is_dir() else ():
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda r: str(r.get("time", "")))
