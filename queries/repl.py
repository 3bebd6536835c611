"""The interactive SQL prompt of ``klinestore sql``: statements end with ``;``, dot commands do the rest.

Readline gives line editing and a history kept in ``~/.klinestore_history`` (or
``$KLINESTORE_HISTORY``). A failing statement prints one line and the prompt goes on; when
the input is not a terminal (a script piped in), the exit code says whether any failed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

import duckdb
import polars as pl

from klinestore.queries.errors import QueryError
from klinestore.queries.output import FORMATS, to_text
from klinestore.queries.sql import execute
from klinestore.queries.views import TABLE_VIEWS

PROMPT = "klinestore> "
CONTINUATION = "       ...> "
HISTORY_LINES = 2000
HELP_TEXT = """\
End SQL statements with ';'. Commands:
  .tables            the views (bars, bars_<interval>, DataQual tables)
  .schema VIEW       columns and types of a view
  .format FMT        table, csv or json
  .maxrows N         rows shown by the table format
  .help              this text
  .quit              leave (Ctrl-D too)"""


class Repl:
    """A read-eval-print loop on a read-only connection (see :mod:`klinestore.queries.sql`)."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        fmt: str = "table",
        max_rows: int = 100,
        stdin: IO[str] | None = None,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        self.con = con
        self.fmt = fmt if fmt in ("table", "csv", "json") else "table"
        self.max_rows = max_rows
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.interactive = self.stdin.isatty()
        self.failures = 0

    def run(self) -> int:
        history = self._start_history() if self.interactive else None
        if self.interactive:
            print("klinestore SQL (read-only DuckDB). End statements with ';'. .help for commands.", file=self.stdout)
        buffer: list[str] = []
        try:
            while True:
                try:
                    line = self._read(CONTINUATION if buffer else PROMPT)
                except KeyboardInterrupt:  # Ctrl-C at the prompt drops the statement being typed
                    print("^C", file=self.stdout)
                    buffer = []
                    continue
                if line is None:
                    break
                if not buffer and line.strip().startswith("."):
                    if not self.command(line.strip()):
                        break
                    continue
                buffer.append(line)
                if line.rstrip().endswith(";"):
                    self.statement("\n".join(buffer))
                    buffer = []
            if buffer and "".join(buffer).strip():
                self.statement("\n".join(buffer))
        finally:
            if history is not None:
                _save_history(history)
        return 1 if self.failures and not self.interactive else 0

    def statement(self, text: str) -> None:
        try:
            self.stdout.write(to_text(execute(self.con, text), self.fmt, max_rows=self.max_rows))
        except QueryError as exc:
            self.fail(str(exc))
        except KeyboardInterrupt:  # Ctrl-C during a query cancels it, not the session
            self.con.interrupt()
            self.fail("query cancelled")

    def command(self, line: str) -> bool:
        """Run a dot command; False means leave."""
        name, _, arg = line.partition(" ")
        arg = arg.strip().rstrip(";")
        if name in (".quit", ".exit", ".q"):
            return False
        if name == ".help":
            print(HELP_TEXT, file=self.stdout)
        elif name == ".tables":
            self.statement(_TABLES_SQL)
        elif name == ".schema":
            if not arg.isidentifier():
                self.fail(".schema needs a view name, e.g. .schema bars_1h")
            else:
                self.statement(f"DESCRIBE {arg}")
        elif name == ".format" and arg in FORMATS and arg != "parquet":
            self.fmt = arg
        elif name == ".maxrows" and arg.isdigit():
            self.max_rows = int(arg)
        else:
            self.fail(f"unknown command {line!r}; .help lists them")
        return True

    def fail(self, message: str) -> None:
        self.failures += 1
        print(f"error: {message}", file=self.stderr)

    def _read(self, prompt: str) -> str | None:
        if self.interactive and self.stdin is sys.stdin:
            try:
                return input(prompt)
            except EOFError:
                print(file=self.stdout)
                return None
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    def _start_history(self) -> Path | None:
        try:
            import readline
        except ImportError:  # no readline on this platform: the prompt still works
            return None
        path = Path(os.environ.get("KLINESTORE_HISTORY", Path.home() / ".klinestore_history"))
        try:
            readline.read_history_file(path)
        except OSError:
            pass
        readline.set_history_length(HISTORY_LINES)
        words = sorted({*self._names(), *_KEYWORDS})
        readline.set_completer(
            lambda text, state: ([w for w in words if w.lower().startswith(text.lower())] + [None])[state]
        )
        readline.set_completer_delims(" \t\n(),;=<>'\"")
        readline.parse_and_bind("tab: complete")
        return path

    def _names(self) -> set[str]:
        """View and column names, for tab completion."""
        try:
            frame = pl.from_arrow(execute(self.con, (
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
            )).read_all())
        except QueryError:
            return set()
        return {str(v) for row in frame.iter_rows() for v in row}  # type: ignore[union-attr]


def _save_history(path: Path) -> None:
    import readline

    try:
        readline.write_history_file(path)
    except OSError:
        pass


_KEYWORDS = (
    "SELECT", "FROM", "WHERE", "GROUP", "BY", "ORDER", "LIMIT", "HAVING", "JOIN", "USING", "WITH", "AS", "AND", "OR",
    "NOT", "DESC", "ASC", "DISTINCT", "COUNT", "DESCRIBE", "SUMMARIZE", "EXPLAIN", "QUALIFY", "date_trunc", "arg_max",
    "arg_min", "time_bucket", ".tables", ".schema", ".format", ".maxrows", ".help", ".quit",
)
_TABLES_SQL = (
    "SELECT table_name AS view, CASE WHEN table_name IN ("
    + ", ".join(f"'{t}'" for t in TABLE_VIEWS)
    + ") THEN 'DataQual table' ELSE 'bars' END AS kind "
    "FROM information_schema.tables WHERE table_schema = 'main' ORDER BY kind, table_name;"
)
