"""Reading klinestore's data: SQL, the Python API, backtest exports, status, charts.

The public surface, re-exported here: :func:`bars`, :func:`sql`, :func:`connect`,
:func:`gaps` (see :mod:`queries.api`), :func:`export` (:mod:`queries.export`),
:func:`read_status` (:mod:`queries.status`) and the errors.
"""

from queries.api import bars, connect, gaps, sql
from queries.errors import ExportError, GapError, QueryError, SqlError

__all__ = ["ExportError", "GapError", "QueryError", "SqlError", "bars", "connect", "gaps", "sql"]
