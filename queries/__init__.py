"""Reading klinestore's data: SQL, the Python API, backtest exports, status."""

from queries.errors import ExportError, GapError, QueryError, SqlError

__all__ = ["ExportError", "GapError", "QueryError", "SqlError"]
