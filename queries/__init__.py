"""Reading klinestore's data: SQL, the Python API, backtest exports, status, charts, metrics.

The public surface, re-exported here: :func:`bars`, :func:`sql`, :func:`connect`,
:func:`gaps`, :func:`funding`, :func:`mark_bars`, :func:`index_bars`, :func:`agg_trades`
(:mod:`klinestore.queries.api`; rows for a gateway in :mod:`klinestore.queries.series`),
:func:`export` (:mod:`klinestore.queries.export`), :func:`read_status`
(:mod:`klinestore.queries.status`) and the errors. The service's metrics endpoint is
:func:`klinestore.queries.metrics.start_metrics_server` (imported on its own: it needs
prometheus-client).

The names load on first use: the ingest process imports ``klinestore.queries.config`` for its
config section, and must not pay for DuckDB (about 34 MB resident) unless it runs a query.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from klinestore.queries.api import agg_trades, bars, connect, funding, gaps, index_bars, mark_bars, sql
    from klinestore.queries.errors import ExportError, GapError, QueryError, SqlError
    from klinestore.queries.export import ExportReport, export
    from klinestore.queries.status import read_status

_LAZY = {
    **dict.fromkeys(("agg_trades", "bars", "connect", "funding", "gaps", "index_bars", "mark_bars", "sql"),
                    "klinestore.queries.api"),
    **dict.fromkeys(("ExportError", "GapError", "QueryError", "SqlError"), "klinestore.queries.errors"),
    "ExportReport": "klinestore.queries.export", "export": "klinestore.queries.export",
    "read_status": "klinestore.queries.status",
}

__all__ = [
    "ExportError", "ExportReport", "GapError", "QueryError", "SqlError", "agg_trades", "bars", "connect", "export",
    "funding", "gaps", "index_bars", "mark_bars", "read_status", "sql",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'klinestore.queries' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
