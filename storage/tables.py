"""The service's DuckDB tables (DataQual and friends) and their published Parquet copies.

DuckDB lets one process write a database file and locks out every other process, readers
included. The service owns ``<data_dir>/dataqual.duckdb``; other processes (``klinestore sql``,
users' notebooks) read the **published** copies under ``<data_dir>/tables/``:

* append tables (``dataqual``, ``reconciliations``, ``connection_events``, ``api_calls``) are
  published one file per UTC day, ``tables/<name>/day=YYYY-MM-DD.parquet``;
* ``gaps`` (rows change when a gap is filled) is published whole, ``tables/gaps/all.parquet``;
* from the first publish on every table has a file (an empty table: an empty file for the
  current UTC day), so ``read_parquet('<data_dir>/tables/<name>/*.parquet')`` always works.

Ingest shards (``sharding.num_shards`` > 1) share a data directory: shard N > 0 owns
``dataqual-sNNNN.duckdb`` and publishes ``...-sNNNN.parquet`` beside shard 0's files, so the
same globs read every shard (each holds its own symbols; ``api_calls`` rows of one minute and
endpoint from several shards add up).

Each publish rewrites only the files whose rows changed, each written to a temporary name,
fsynced and renamed over the old one: a reader sees the old file or the new one, never a
torn or duplicated table. Column names and order are fixed (users and acceptance checks
query them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from klinestore.storage.errors import StorageError

DB_NAME = "dataqual.duckdb"
TABLES_DIR = "tables"

#: Fixed table schemas: name -> [(column, DuckDB type)].
TABLE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "dataqual": [
        ("ts", "TIMESTAMPTZ"), ("symbol", "VARCHAR"), ("score", "DOUBLE"), ("missing_streams", "INTEGER"),
        ("mismatches", "INTEGER"), ("gaps", "INTEGER"), ("reasons", "VARCHAR"),
    ],
    "reconciliations": [
        ("ts", "TIMESTAMPTZ"), ("symbol", "VARCHAR"), ("interval", "VARCHAR"), ("open_time", "TIMESTAMPTZ"),
        ("field", "VARCHAR"), ("ws_value", "DOUBLE"), ("ref_value", "DOUBLE"), ("ref_source", "VARCHAR"),
        ("action", "VARCHAR"),
    ],
    "gaps": [
        ("symbol", "VARCHAR"), ("interval", "VARCHAR"), ("start_time", "TIMESTAMPTZ"), ("end_time", "TIMESTAMPTZ"),
        ("detected_at", "TIMESTAMPTZ"), ("filled_at", "TIMESTAMPTZ"), ("reason", "VARCHAR"),
    ],
    "connection_events": [
        ("ts", "TIMESTAMPTZ"), ("conn_id", "VARCHAR"), ("from_state", "VARCHAR"), ("to_state", "VARCHAR"),
        ("reason", "VARCHAR"),
    ],
    "api_calls": [
        ("minute", "TIMESTAMPTZ"), ("endpoint", "VARCHAR"), ("calls", "INTEGER"), ("weight", "INTEGER"),
    ],
}
#: The column that places a row of an append table in its day file.
#: One ``reconciliations`` row as the writers hand it over: (ts_ms, symbol, interval,
#: open_time_ms, field, ws_value, ref_value, ref_source, action).
ReconciliationRow = tuple[int, str, str, int, str, float | None, float | None, str, str]

_DAY_COLUMN = {"dataqual": "ts", "reconciliations": "ts", "connection_events": "ts", "api_calls": "minute"}
#: Arrow types of the inserts; times arrive as epoch milliseconds.
_ARROW = {"TIMESTAMPTZ": pa.timestamp("ms", tz="UTC"), "VARCHAR": pa.string(), "DOUBLE": pa.float64(),
          "INTEGER": pa.int32()}
_POLARS = {"TIMESTAMPTZ": pl.Int64, "VARCHAR": pl.String, "DOUBLE": pl.Float64, "INTEGER": pl.Int32}  # times as epoch ms


def published_glob(data_dir: Path, table: str) -> str:
    """Glob of a table's published Parquet files (what other processes read)."""
    if table not in TABLE_COLUMNS:
        raise StorageError(f"unknown table {table!r}")
    return str(Path(data_dir) / TABLES_DIR / table / "*.parquet")


def empty_select(table: str) -> str:
    """A typed, empty SELECT with the table's columns (for views before the first publish)."""
    cols = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in TABLE_COLUMNS[table])
    return f"SELECT {cols} WHERE false"


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


class QualityDB:
    """The service's DuckDB database of DataQual, reconciliations, gaps, connection events and API calls.

    Thread-safe (one connection behind a lock): jobs run in worker threads.
    """

    def __init__(self, data_dir: Path, *, shard_id: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self._suffix = f"-s{shard_id:04d}" if shard_id else ""
        self.path = self.data_dir / (DB_NAME.replace(".duckdb", f"{self._suffix}.duckdb"))
        self._lock = threading.Lock()
        self._dirty: set[tuple[str, str]] = set()
        self._complete = False  # every table has at least one published file
        self._con: duckdb.DuckDBPyConnection | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> QualityDB:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(self.path))
        except duckdb.Error as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from None
        with self._lock:
            self._con.execute("SET TimeZone = 'UTC'")
            for table, cols in TABLE_COLUMNS.items():
                ddl = ", ".join(f"{name} {kind}" for name, kind in cols)
                self._con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({ddl})")
            self._con.execute(
                "CREATE UNIQUE INDEX IF NOT EXISTS gaps_key ON gaps (symbol, interval, start_time)"
            )
            self._con.execute(
                "CREATE UNIQUE INDEX IF NOT EXISTS api_calls_key ON api_calls (minute, endpoint)"
            )
        return self

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __enter__(self) -> QualityDB:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StorageError("QualityDB is not open")
        return self._con

    # -- writes -------------------------------------------------------------------------------

    def insert_dataqual(self, rows: Iterable[tuple[int, str, float, int, int, int, str]]) -> int:
        """Rows of (ts_ms, symbol, score, missing_streams, mismatches, gaps, reasons)."""
        return self._append("dataqual", list(rows))

    def insert_reconciliations(self, rows: Iterable[ReconciliationRow]) -> int:
        """Rows of (ts_ms, symbol, interval, open_time_ms, field, ws_value, ref_value, ref_source, action)."""
        return self._append("reconciliations", list(rows))

    def insert_connection_events(self, rows: Iterable[tuple[int, str, str, str, str]]) -> int:
        """Rows of (ts_ms, conn_id, from_state, to_state, reason)."""
        return self._append("connection_events", list(rows))

    def add_api_calls(self, rows: Iterable[tuple[int, str, int, int]]) -> int:
        """Rows of (minute_ms, endpoint, calls, weight), added to what the minute already has."""
        data = list(rows)
        if not data:
            return 0
        with self._lock:
            self._insert("api_calls", data, "SELECT minute, endpoint, sum(calls)::INTEGER, sum(weight)::INTEGER FROM {rows} "
                         "GROUP BY minute, endpoint ON CONFLICT (minute, endpoint) DO UPDATE "
                         "SET calls = api_calls.calls + excluded.calls, weight = api_calls.weight + excluded.weight")
            self._dirty.update(("api_calls", _day(r[0])) for r in data)
        return len(data)

    def open_gap(self, symbol: str, interval: str, start_ms: int, end_ms: int, detected_ms: int, reason: str) -> bool:
        """Record missing bars ``[start_ms, end_ms]`` (open times, inclusive); False if already known.

        An open record of the series that holds ``start_ms`` is extended to ``end_ms`` instead
        (the feed and the restart check report the same hole, seen at different times).
        """
        series = [symbol, interval]
        with self._lock:
            holder = self.con.execute(
                "SELECT epoch_ms(start_time) FROM gaps WHERE symbol = ? AND interval = ? AND start_time <= ? AND end_time >= ? "
                "AND (filled_at IS NULL OR start_time = ?) ORDER BY filled_at NULLS FIRST LIMIT 1",
                [*series, _ts(start_ms), _ts(start_ms), _ts(start_ms)],
            ).fetchone()
            known = holder is not None
            if known:
                self.con.execute(
                    "UPDATE gaps SET end_time = greatest(end_time, ?) "
                    "WHERE symbol = ? AND interval = ? AND start_time = ? AND filled_at IS NULL",
                    [_ts(end_ms), *series, _ts(holder[0])],
                )
            else:
                self.con.execute(
                    "INSERT INTO gaps VALUES (?, ?, ?, ?, ?, NULL, ?)",
                    [*series, _ts(start_ms), _ts(end_ms), _ts(detected_ms), reason],
                )
            self._dirty.add(("gaps", "all"))
        return not known

    def split_gap(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, pieces: Sequence[tuple[int, int, int | None]]
    ) -> bool:
        """Replace the open record ``[start_ms, end_ms]`` by ``pieces`` ``(start, end, filled_ms or None)``.

        The pieces keep the record's ``detected_at`` and ``reason``; the first must start at
        ``start_ms``. False (nothing changed) when the record is no longer exactly that, e.g.
        extended meanwhile: the caller looks again next time.
        """
        if not pieces or pieces[0][0] != start_ms:
            raise StorageError("the first piece of a gap must start where the gap starts")
        key = [symbol, interval, _ts(start_ms)]
        with self._lock:
            row = self.con.execute(
                "SELECT epoch_ms(detected_at), reason FROM gaps WHERE symbol = ? AND interval = ? AND start_time = ? "
                "AND end_time = ? AND filled_at IS NULL",
                [*key, _ts(end_ms)],
            ).fetchone()
            if row is None:
                return False
            first_end, first_filled = pieces[0][1], pieces[0][2]
            self.con.execute("BEGIN TRANSACTION")
            try:
                self.con.execute(
                    "UPDATE gaps SET end_time = ?, filled_at = ? WHERE symbol = ? AND interval = ? AND start_time = ?",
                    [_ts(first_end), _ts(first_filled), *key],
                )
                if len(pieces) > 1:
                    self.con.executemany(
                        "INSERT INTO gaps VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(symbol, interval, _ts(s), _ts(e), _ts(row[0]), _ts(f), row[1]) for s, e, f in pieces[1:]],
                    )
                self.con.execute("COMMIT")
            except duckdb.Error:
                self.con.execute("ROLLBACK")
                raise
            self._dirty.add(("gaps", "all"))
        return True

    def fill_gap(self, symbol: str, interval: str, start_ms: int, filled_ms: int, *, end_ms: int | None = None) -> bool:
        """Mark the open record starting at ``start_ms`` filled (only if it ends by ``end_ms``, when given)."""
        sql = "UPDATE gaps SET filled_at = ? WHERE symbol = ? AND interval = ? AND start_time = ? AND filled_at IS NULL"
        params: list[Any] = [_ts(filled_ms), symbol, interval, _ts(start_ms)]
        if end_ms is not None:
            sql += " AND end_time <= ?"
            params.append(_ts(end_ms))
        with self._lock:
            changed = self.con.execute(sql + " RETURNING 1", params).fetchall()
            self._dirty.add(("gaps", "all"))
        return bool(changed)

    def open_gaps(self, symbol: str | None = None) -> list[tuple[str, str, int, int, int, str]]:
        """Unfilled gaps as (symbol, interval, start_ms, end_ms, detected_ms, reason)."""
        sql = (
            "SELECT symbol, interval, epoch_ms(start_time), epoch_ms(end_time), epoch_ms(detected_at), reason "
            "FROM gaps WHERE filled_at IS NULL"
        )
        params: list[Any] = []
        if symbol is not None:
            sql += " AND symbol = ?"
            params.append(symbol)
        with self._lock:
            return [tuple(r) for r in self.con.execute(sql + " ORDER BY symbol, interval, start_time", params).fetchall()]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read query on the service's own connection (for status and tests)."""
        with self._lock:
            return self.con.execute(sql, list(params)).fetchall()

    def _append(self, table: str, rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        day_index = [name for name, _ in TABLE_COLUMNS[table]].index(_DAY_COLUMN[table])
        with self._lock:
            self._insert(table, rows)
            self._dirty.update((table, _day(r[day_index])) for r in rows)
        return len(rows)

    def _insert(self, table: str, rows: list[tuple[Any, ...]], select: str = "SELECT * FROM {rows}") -> None:
        """One columnar insert of ``select`` over ``rows`` (times as epoch ms): DuckDB's executemany costs ~3 ms a row."""
        # Built by polars, not pa.array: pyarrow's list conversion imports pandas when it is
        # installed (~50 MB of RSS the service never uses).
        columns = list(zip(*rows))
        spec = TABLE_COLUMNS[table]
        frame = pl.DataFrame([pl.Series(name, values, dtype=_POLARS[kind]) for (name, kind), values in zip(spec, columns)])
        batch = frame.to_arrow().cast(pa.schema([(name, _ARROW[kind]) for name, kind in spec]))
        self.con.register("_klinestore_rows", batch)
        try:
            self.con.execute(f"INSERT INTO {table} " + select.format(rows="_klinestore_rows"))
        finally:
            self.con.unregister("_klinestore_rows")

    # -- publishing ---------------------------------------------------------------------------

    def publish(self, *, everything: bool = False) -> list[Path]:
        """Write the changed published files atomically; returns the files written."""
        with self._lock:
            dirty = set(self._dirty)
            if everything:
                dirty |= {("gaps", "all")}
                for table, column in _DAY_COLUMN.items():
                    days = self.con.execute(
                        f"SELECT DISTINCT strftime({column}, '%Y-%m-%d') FROM {table}"
                    ).fetchall()
                    dirty |= {(table, d[0]) for d in days}
            self._dirty.clear()
            written = [self._publish_one(table, day) for table, day in sorted(dirty)]
            if not self._complete:  # every table has a file from the first publish on: a glob never comes up empty
                today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
                written += [self._publish_one(t, today if t in _DAY_COLUMN else "all") for t in TABLE_COLUMNS
                            if not any((self.data_dir / TABLES_DIR / t).glob(f"*{self._suffix}.parquet"))]
                self._complete = True
        return written

    def _publish_one(self, table: str, day: str) -> Path:
        folder = self.data_dir / TABLES_DIR / table
        folder.mkdir(parents=True, exist_ok=True)
        if table == "gaps":
            target, where = folder / f"all{self._suffix}.parquet", ""
        else:
            column = _DAY_COLUMN[table]
            target = folder / f"day={day}{self._suffix}.parquet"
            where = f" WHERE {column} >= TIMESTAMPTZ '{day} 00:00:00+00' AND {column} < TIMESTAMPTZ '{day} 00:00:00+00' + INTERVAL 1 DAY"
        tmp = folder / f".{target.name}.tmp"
        order = ", ".join(name for name, _ in TABLE_COLUMNS[table][:2])
        try:
            tmp.unlink(missing_ok=True)  # DuckDB would write through a symlink planted there
            self.con.execute(
                f"COPY (SELECT * FROM {table}{where} ORDER BY {order}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)"
            )
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except (duckdb.Error, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot publish {table} to {target}: {exc}") from None
        return target
