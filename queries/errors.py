"""Errors of the queries package.

Tree::

    KlinestoreError
    └── QueryError
        ├── SqlError          a query DuckDB refused (one line, for the CLI)
        ├── ExportError       an export that cannot be written as asked
        └── GapError          missing bars in an export range with ``--on-gap fail``
"""

from __future__ import annotations

from klinestore.core.errors import KlinestoreError


class QueryError(KlinestoreError):
    """Root of query errors."""


class SqlError(QueryError):
    """DuckDB refused the query."""


class ExportError(QueryError):
    """The export cannot be written as asked."""


class GapError(ExportError):
    """Bars are missing in the requested range; ``gaps`` lists (start_ms, end_ms) pairs."""

    def __init__(self, message: str, gaps: list[tuple[int, int]]) -> None:
        self.gaps = gaps
        super().__init__(message)
