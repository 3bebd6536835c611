"""Reading klinestore's data: SQL, the Python API, backtest exports, status, charts, metrics.

The public surface, re-exported here: :func:`bars`, :func:`sql`, :func:`connect`,
:func:`gaps`, :func:`funding`, :func:`mark_bars`, :func:`index_bars`, :func:`agg_trades` (:mod:`klinestore.queries.api`; rows
for a gateway in :mod:`klinestore.queries.series`), :func:`export` (:mod:`klinestore.queries.export`),
:func:`read_status` (:mod:`klinestore.queries.status`) and the errors. The service's metrics endpoint
is :func:`klinestore.queries.metrics.start_metrics_server` (imported on its own: it needs
prometheus-client).

Names load on first use (:func:`klinestore.core.lazy.lazy_exports`): importing
``klinestore.queries.config`` does not import DuckDB.
"""

from klinestore.core.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "api": ("agg_trades", "bars", "connect", "funding", "gaps", "index_bars", "mark_bars", "sql"),
    "errors": ("ExportError", "GapError", "QueryError", "SqlError"),
    "export": ("ExportReport", "export"),
    "status": ("read_status",),
})
