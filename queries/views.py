"""The SQL views every klinestore session has: bars, one per interval, and the DataQual tables.

* ``bars``: every USD-M bar of every interval (storage's deduplicated relation, 15 columns,
  UTC timestamps);
* ``bars_<interval>``: one interval, always for the five default intervals (empty until
  data arrives) and for any other interval stored (``bars_1d``...). DuckDB identifiers
  ignore case, so the calendar month ``1M`` is ``bars_1mo`` (``bars_1m`` is minutes);
* ``spot_bars``, ``spot_bars_<interval>``: the same over the spot dataset that ``klinestore
  import --market spot`` writes (kept apart: a spot BTCUSDT is not the USD-M one);
* ``mark_bars``, ``mark_bars_<interval>``, ``index_bars``, ``index_bars_<interval>``: mark and
  index price bars (``symbol, interval, open_time, close_time, open, high, low, close,
  is_complete, source``), and ``funding`` (``symbol, funding_time, funding_rate, mark_price``),
  from the series datasets (``klinestore.storage.series``);
* ``agg_trades``: every stored aggTrade (``storage.persist_aggtrades``), one row per
  ``(symbol, agg_trade_id)``;
* ``dataqual``, ``reconciliations``, ``gaps``, ``connection_events``, ``api_calls``: the
  service's tables as it publishes them (``klinestore.storage.tables``), typed and empty before the
  first publish.

Views read their Parquet globs at query time: a file the service publishes after the view
was created is seen by the next query, and nothing here takes a lock the writer waits on.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import duckdb

from klinestore.core.intervals import interval_sort_key
from klinestore.storage import Dataset, agg_trades_relation_sql, series_relation_sql
from klinestore.storage.tables import TABLE_COLUMNS, TABLES_DIR, empty_select, published_glob

#: Interval views that exist even on an empty dataset (the service's default intervals).
DEFAULT_INTERVALS: tuple[str, ...] = ("1m", "5m", "15m", "1h", "4h")
TABLE_VIEWS: tuple[str, ...] = tuple(TABLE_COLUMNS)


def interval_view(interval: str) -> str:
    """The view name of one interval (``1M`` is ``bars_1mo``: SQL names ignore case)."""
    return "bars_1mo" if interval == "1M" else f"bars_{interval}"


#: View-name prefix per market: USD-M futures are the plain ``bars``.
MARKET_PREFIX = {"um": "", "spot": "spot_"}
#: Where the agg_trades view reads (``klinestore.storage.aggtrades``).
AGG_TRADES_DIR = "agg_trades"
#: View-name prefix of the price series (``mark_bars``, ``index_bars_1h``...).
SERIES_PREFIX = {"mark": "mark_", "index": "index_"}


def stored_intervals(data_dir: Path, market: str = "um") -> list[str]:
    """Intervals with a partition directory in one market's dataset, shortest first."""
    return Dataset(data_dir, market).intervals()


def view_intervals(data_dir: Path, market: str = "um") -> list[str]:
    return sorted(set(DEFAULT_INTERVALS) | set(stored_intervals(data_dir, market)), key=interval_sort_key)


def readable_dirs(data_dir: Path) -> list[Path]:
    """The only directories a session may read: the bar datasets and the published tables."""
    datasets = [*MARKET_PREFIX, *SERIES_PREFIX, "funding"]
    return [*(Dataset(data_dir, name).root for name in datasets), data_dir / AGG_TRADES_DIR, data_dir / TABLES_DIR]


def create_views(con: duckdb.DuckDBPyConnection, data_dir: Path, skip: Collection[Path] = ()) -> list[str]:
    """Create every view on ``con``; returns their names (bars first, then intervals, spot, tables).

    ``skip``: damaged files the bar views leave out (see ``bars_relation_sql``).
    """
    names = []
    for market, prefix in MARKET_PREFIX.items():
        dataset = Dataset(data_dir, market)
        con.execute(f"CREATE OR REPLACE VIEW {prefix}bars AS {dataset.relation_sql(skip=skip)}")
        names.append(f"{prefix}bars")
        for interval in view_intervals(data_dir, market):
            name = prefix + interval_view(interval)
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {dataset.relation_sql(interval, skip=skip)}")
            names.append(name)
    for kind, prefix in SERIES_PREFIX.items():
        con.execute(f"CREATE OR REPLACE VIEW {prefix}bars AS {series_relation_sql(data_dir, kind, skip=skip)}")
        names.append(f"{prefix}bars")
        for interval in view_intervals(data_dir, kind):
            name = prefix + interval_view(interval)
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {series_relation_sql(data_dir, kind, interval, skip=skip)}")
            names.append(name)
    con.execute(f"CREATE OR REPLACE VIEW funding AS {series_relation_sql(data_dir, 'funding', skip=skip)}")
    names.append("funding")
    con.execute(f"CREATE OR REPLACE VIEW agg_trades AS {agg_trades_relation_sql(data_dir, skip=skip)}")
    names.append("agg_trades")
    for table in TABLE_VIEWS:
        con.execute(f"CREATE OR REPLACE VIEW {table} AS {table_select(data_dir, table)}")
        names.append(table)
    return names


def table_select(data_dir: Path, table: str) -> str:
    """A published table with its fixed columns, in order; typed and empty before any publish."""
    glob = published_glob(data_dir, table).replace("'", "''")
    columns = ", ".join(f"CAST({name} AS {kind}) AS {name}" for name, kind in TABLE_COLUMNS[table])
    return (
        f"SELECT {columns} FROM (SELECT * FROM read_parquet('{glob}', union_by_name = true, allow_empty = true) "
        f"UNION ALL BY NAME {empty_select(table)})"
    )
