"""A read-only DuckDB session over the dataset, and the guard every user query passes.

Read-only is enforced in two layers, because DuckDB's own settings cannot say "read but
never write" for a directory:

1. **The session.** An in-memory database (nothing on disk to write to); the views are
   created first, then ``enable_external_access = false`` with ``allowed_directories`` set
   to the dataset and the published tables only (so no other file, URL or extension can be
   read or loaded), extension auto-install/auto-load off, spilling to a private temporary
   directory, TimeZone UTC, and ``lock_configuration = true`` so no query can undo any of it.
2. **The statements.** DuckDB would still let ``COPY ... TO``, ``EXPORT DATABASE`` or
   ``ATTACH`` write *inside* an allowed directory, so every statement of a query is checked
   against an allow-list before it runs: queries, ``EXPLAIN`` of a query, ``PRAGMA``,
   reporting ``PRAGMA``s, ``CALL`` of table functions. Everything else is refused with one
   line: ``COPY``, ``ATTACH``, ``EXPORT``/``IMPORT``, ``INSTALL``/``LOAD``, ``PREPARE``, and
   also ``CREATE``/``INSERT``/``UPDATE``/``DELETE``/``DROP``/``ALTER``/``SET``, which would
   only touch this in-memory session but are not reads.

Results leave through Python (:mod:`klinestore.queries.output`), never through DuckDB's writers.
"""

from __future__ import annotations

import itertools
import re
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from klinestore.queries.errors import SqlError
from klinestore.queries.views import AGG_TRADES_DIR, MARKET_PREFIX, SERIES_PREFIX, create_views, readable_dirs
from klinestore.storage import Dataset, find_damaged, skipped

#: Reads only: queries (SELECT, FROM, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE, UNPIVOT), EXPLAIN of
#: a query, PRAGMAs that report (:data:`_READ_PRAGMAS`), CALL of a table function and PIVOT
#: (DuckDB files it as MULTI). CREATE, INSERT, UPDATE, DELETE, DROP, ALTER, SET, BEGIN... are
#: refused even though they would only touch this in-memory session: ``klinestore sql`` is a
#: read-only tool, and a "Success" for a DROP VIEW tells a user their data was changed.
_ALLOWED = {
    duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA,
    duckdb.StatementType.CALL, duckdb.StatementType.MULTI,
}
_READ_PRAGMAS = re.compile(
    r"^\s*PRAGMA\s+(table_info|show|show_tables|show_tables_expanded|show_databases|database_list|database_size|"
    r"storage_info|version|platform|functions|collations|user_agent|metadata_info)\b", re.IGNORECASE,
)
_FIRST_WORD = {duckdb.StatementType.CALL: "CALL", duckdb.StatementType.MULTI: ("PIVOT", "UNPIVOT")}
#: Statements DuckDB files under an allowed type that still reach the file system.
_HIDDEN_WRITERS = re.compile(r"^\s*(IMPORT\s+DATABASE|COPY\b)", re.IGNORECASE)
_EXPLAIN_PREFIX = re.compile(r"^\s*EXPLAIN\s+(ANALYZE\s+|ANALYSE\s+)?(\([^)]*\)\s*)?", re.IGNORECASE)
BATCH_ROWS = 65_536
T = TypeVar("T")
#: Errors a damaged Parquet file raises without naming it (a flipped byte in a page).
_FILE_ERRORS = (duckdb.IOException, duckdb.InvalidInputException, duckdb.InternalException,
                duckdb.SerializationException)
#: What DuckDB says when a page it reads is damaged but does not name the file.
_LOOKS_DAMAGED = re.compile(r"parquet|thrift|TProtocol|zstd|snappy|decompress|out of buffer|corrupt|magic|"
                            r"checksum|encoding|dictionary|page", re.IGNORECASE)
_WHY = "klinestore sql runs reads only (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN); write results with --out"


def connect(data_dir: Path | str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views, locked read-only (see the module docstring).

    Damaged bar files are left out of the views with a warning naming each (see
    :mod:`klinestore.storage.quarantine`); the session answers from the rest.
    """
    data_dir = Path(data_dir).resolve()
    con = duckdb.connect(":memory:")
    spill = tempfile.mkdtemp(prefix="klinestore-sql-")
    weakref.finalize(con, shutil.rmtree, spill, ignore_errors=True)
    session = _Session(data_dir, set(_damaged(data_dir, deep=False)))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")  # it would print into the CSV on stdout
        con.execute("SET parquet_metadata_cache = true")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute(f"SET temp_directory = '{_quote(spill)}'")
        _retrying(con, session, lambda: create_views(con, data_dir, session.skip))
        allowed = ", ".join(f"'{_quote(str(d))}/'" for d in readable_dirs(data_dir))
        con.execute(f"SET allowed_directories = [{allowed}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        raise SqlError(f"cannot open the SQL session on {data_dir}: {one_line(exc)}") from None
    _SESSIONS[con] = session
    return con


@dataclass(slots=True)
class _Session:
    data_dir: Path
    skip: set[Path]


_SESSIONS: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, _Session] = weakref.WeakKeyDictionary()
_NAMED_FILE = re.compile(r"""["'](/[^"']+\.parquet)["']""")
#: Fresh listings a query gets: a file retired by a compaction, or found damaged, is one each.
_ATTEMPTS = 5


def _damaged(data_dir: Path, *, deep: bool, among: Iterable[Path] | None = None) -> list[Path]:
    """Damaged bar files (noted with a warning each); all of the datasets' files unless ``among``."""
    if among is None:
        among = [p for name in (*MARKET_PREFIX, *SERIES_PREFIX, "funding") for p in Dataset(data_dir, name).files()]
        among += sorted((data_dir / AGG_TRADES_DIR).glob("day=*/*.parquet"))
    if deep:
        return find_damaged(among)
    healthy = set(skipped(among))
    return [p for p in among if p not in healthy]


def _recover(con: duckdb.DuckDBPyConnection, session: _Session, exc: duckdb.Error) -> bool:
    """After ``exc``: skip the damaged file(s) it came from, or take a fresh listing if a file
    vanished (a compaction retired it); rebuild the views. False if neither explains it."""
    named = [Path(m) for m in _NAMED_FILE.findall(str(exc))]
    named = [p for p in named if p.is_relative_to(session.data_dir)]
    vanished = any(not p.exists() for p in named)
    if not vanished:
        suspects = named or None
        # a bare duckdb.Error comes from a reader (Thrift: "don't know what type"), never a user
        looks_damaged = type(exc) is duckdb.Error or isinstance(exc, _FILE_ERRORS) and _LOOKS_DAMAGED.search(str(exc))
        if suspects is None and not looks_damaged:
            return False  # a user's error: never worth decoding every file to find out
        found = _damaged(session.data_dir, deep=True, among=suspects)
        if not found:
            return False
        session.skip.update(p.resolve() for p in found)
    create_views(con, session.data_dir, session.skip)
    return True


def _retrying(con: duckdb.DuckDBPyConnection, session: _Session | None, run: Callable[[], T]) -> T:
    for attempt in range(_ATTEMPTS):
        try:
            return run()
        except duckdb.Error as exc:
            if session is None or attempt == _ATTEMPTS - 1 or not _recover(con, session, exc):
                raise
    raise AssertionError("unreachable")


def check_statements(con: duckdb.DuckDBPyConnection, query: str) -> list[str]:
    """The statements of ``query`` as text, or :class:`SqlError` for one that could write."""
    try:
        statements = con.extract_statements(query)
    except (duckdb.Error, ValueError) as exc:
        raise SqlError(one_line(exc)) from None
    if not statements:
        raise SqlError("empty query")
    out = []
    for statement in statements:
        text = statement.query
        try:
            kind = statement.type
        except ValueError:  # a statement type this duckdb build cannot even name
            raise SqlError(f"{_verb(text)} is not allowed: {_WHY}") from None
        _check_one(con, kind, text)
        out.append(text)
    return out


def execute(con: duckdb.DuckDBPyConnection, query: str) -> pa.RecordBatchReader:
    """Run ``query`` (checked first); the last statement's result as a stream of Arrow batches.

    A statement that fails because a listed file vanished (compaction) or is damaged runs
    again on a fresh listing; the first batch is read here so that this happens before any
    row leaves (the bar views aggregate, so their errors come before their first batch).
    """
    statements = check_statements(con, query)
    session = _SESSIONS.get(con)

    def last() -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        relation = con.sql(statements[-1])
        if relation is None:  # a statement without a result (CREATE, SET...) already ran
            return pa.schema([]), iter(())
        reader = relation.to_arrow_reader(BATCH_ROWS)
        first = next(iter(reader), None)
        return reader.schema, itertools.chain([] if first is None else [first], reader)

    try:
        for text in statements[:-1]:
            _retrying(con, session, lambda: (con.execute(text), con.complete()))
        schema, batches = _retrying(con, session, last)
    except (duckdb.Error, pa.ArrowException) as exc:
        raise SqlError(one_line(exc)) from None
    return pa.RecordBatchReader.from_batches(schema, _translated(batches))


def _translated(reader: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The batches of ``reader``; an error while the query runs becomes one :class:`SqlError`."""
    try:
        yield from reader
    except (duckdb.Error, pa.ArrowException) as exc:
        raise SqlError(one_line(exc)) from None


def one_line(exc: BaseException) -> str:
    """DuckDB's message without its multi-line context (``LINE 1: ...`` and the caret)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _check_one(con: duckdb.DuckDBPyConnection, kind: duckdb.StatementType, text: str) -> None:
    first = text.split(None, 1)[0].upper() if text.strip() else ""
    if (kind not in _ALLOWED or _HIDDEN_WRITERS.match(text)
            or (kind == duckdb.StatementType.PRAGMA and not _READ_PRAGMAS.match(text))
            or (kind in _FIRST_WORD and not first.startswith(_FIRST_WORD[kind]))):
        raise SqlError(f"{_verb(text)} is not allowed: {_WHY}")
    if kind == duckdb.StatementType.EXPLAIN:
        inner = _EXPLAIN_PREFIX.sub("", text, count=1)
        try:
            inner_statements = con.extract_statements(inner)
        except (duckdb.Error, ValueError):
            raise SqlError(f"EXPLAIN is allowed only of a query: {_WHY}") from None
        for statement in inner_statements:
            if statement.type not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
                raise SqlError(f"EXPLAIN is allowed only of a query: {_WHY}")
            _check_one(con, statement.type, statement.query)


def _verb(text: str) -> str:
    words = text.split(None, 2)[:2] or ["?"]
    return " ".join(words).upper() if words[0].upper() in ("EXPORT", "IMPORT", "FORCE", "UPDATE") else words[0].upper()


def _quote(text: str) -> str:
    return text.replace("'", "''")
