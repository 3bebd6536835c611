"""Reading klinestore's data: SQL, the Python API, backtest exports, status, charts, metrics.

The public surface, re-exported here: :func:`bars`, :func:`sql`, :func:`connect`,
:func:`gaps`, :func:`funding`, :func:`mark_bars`, :func:`index_bars`, :func:`agg_trades` (:mod:`klinestore.queries.api`; rows
for a gateway in :mod:`klinestore.queries.series`), :func:`export` (:mod:`klinestore.queries.export`),
:func:`read_status` (:mod:`klinestore.queries.status`) and the errors. The service's metrics endpoint
is :func:`klinestore.queries.metrics.start_metrics_server` (imported on its own: it needs
prometheus-client).
"""

from klinestore.queries.api import agg_trades, bars, connect, funding, gaps, index_bars, mark_bars, sql
from klinestore.queries.errors import ExportError, GapError, QueryError, SqlError
from klinestore.queries.export import ExportReport, export
from klinestore.queries.status import read_status

__all__ = [
    "ExportError", "ExportReport", "GapError", "QueryError", "SqlError", "agg_trades", "bars", "connect", "export", "funding", "gaps",
    "index_bars", "mark_bars",
    "read_status", "sql",
]
