"""The Python API: bars as frames, SQL, a DuckDB connection with the views, gaps.

::

    from klinestore import queries as kq
    df = kq.bars("BTCUSDT", "1h", "2024-01-01", "2024-02-01")          # Polars, UTC times
    pdf = kq.bars("BTCUSDT", "1m", start=1704067200000, as_pandas=True)
    top = kq.sql("SELECT symbol, sum(quote_volume) FROM bars_1d GROUP BY ALL ORDER BY 2 DESC")
    con = kq.connect()                                                  # DuckDB, read-only views
    holes = kq.gaps("BTCUSDT", "1m", "2024-01-01", "2024-02-01")
    rates = kq.funding("BTCUSDT", "2024-01-01")                          # symbol, funding_time, funding_rate, mark_price
    marks = kq.mark_bars("BTCUSDT", "1h", "2024-01-01")                 # kq.index_bars likewise

``data_dir`` defaults to the configured one (``storage.data_dir``, env ``KLINESTORE_DATA_DIR``).
Ranges are half-open on open times, ``[start, end)`` (see :mod:`klinestore.queries.times`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl

from klinestore.queries import series as _series
from klinestore.queries import sql as _sql
from klinestore.queries.gaps import expected_end, gap_frame, missing_runs
from klinestore.queries.times import optional_ms, to_ms
from klinestore.storage import Dataset, read_agg_trades
from klinestore.storage.config import default_data_dir as configured_data_dir

if TYPE_CHECKING:
    import pandas as pd


def default_data_dir(data_dir: Path | str | None = None) -> Path:
    """``data_dir``, or the configured data directory when it is None."""
    return Path(data_dir) if data_dir is not None else configured_data_dir()


def bars(
    symbol: str,
    interval: str,
    start: Any = None,
    end: Any = None,
    *,
    data_dir: Path | str | None = None,
    as_pandas: bool = False,
    market: str = "um",
) -> pl.DataFrame | pd.DataFrame:
    """Bars of one symbol and interval with open times in ``[start, end)``, oldest first.

    ``market="spot"`` reads what ``klinestore import --market spot`` stored.

    ``start``/``end``: epoch ms, ISO strings, datetimes (naive = UTC) or None for unbounded.
    Columns: the 15 bar columns, times ``Datetime("ms", "UTC")``; with ``as_pandas`` a pandas
    frame with ``datetime64[ms, UTC]`` times (pandas must be installed).
    """
    frame = Dataset(default_data_dir(data_dir), market).read(
        symbol, interval, optional_ms(start, name="start"), optional_ms(end, name="end")
    )
    return frame.to_pandas() if as_pandas else frame


def connect(data_dir: Path | str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every view (``bars``, ``bars_1m``..., the DataQual
    tables), UTC session time zone, no access to files outside the dataset.

    Statements are not filtered on this raw connection (:func:`sql` and ``klinestore sql``
    do filter them): it is for code you write, not for queries you pass along.
    """
    return _sql.connect(default_data_dir(data_dir))


def sql(query: str, *, data_dir: Path | str | None = None) -> pl.DataFrame:
    """Run a read-only query over the views; the last statement's result as a Polars frame."""
    con = _sql.connect(default_data_dir(data_dir))
    try:
        return pl.from_arrow(_sql.execute(con, query).read_all())  # type: ignore[return-value]
    finally:
        con.close()


def gaps(
    symbol: str,
    interval: str,
    start: Any,
    end: Any = None,
    *,
    data_dir: Path | str | None = None,
    count_incomplete: bool = True,
) -> pl.DataFrame:
    """Missing bars in ``[start, end)`` (``end`` defaults to now), one row per run.

    Columns ``first_missing``, ``last_missing`` (open times, UTC) and ``bars``. Incomplete
    bars (resampled from a bucket that missed a minute) count as missing unless
    ``count_incomplete=False``. Bars that cannot have closed yet are never missing.
    """
    start_ms = to_ms(start, name="start")
    end_ms = expected_end(interval, optional_ms(end, name="end"))
    frame = Dataset(default_data_dir(data_dir)).read(symbol, interval, start_ms, end_ms)
    return gap_frame(missing_runs(frame, interval, start_ms, end_ms, count_incomplete=count_incomplete), interval)


def funding(
    symbol: str, start: Any = None, end: Any = None, *, data_dir: Path | str | None = None, as_pandas: bool = False
) -> pl.DataFrame | pd.DataFrame:
    """Funding events of one symbol with funding times in ``[start, end)``, oldest first.

    Columns ``symbol, funding_time`` (UTC), ``funding_rate, mark_price`` (null when unknown).
    """
    frame = _series.funding(default_data_dir(data_dir), symbol, optional_ms(start, name="start"),
                            optional_ms(end, name="end"))
    return frame.to_pandas() if as_pandas else frame


def mark_bars(
    symbol: str, interval: str, start: Any = None, end: Any = None, *, data_dir: Path | str | None = None,
    as_pandas: bool = False, kind: str = "mark",
) -> pl.DataFrame | pd.DataFrame:
    """Mark-price bars (``kind="index"``: index-price bars) of one symbol, open times in ``[start, end)``.

    Columns ``symbol, interval, open_time, close_time, open, high, low, close, is_complete, source``.
    """
    frame = _series.price_bars(default_data_dir(data_dir), kind, symbol, interval, optional_ms(start, name="start"),
                               optional_ms(end, name="end"))
    return frame.to_pandas() if as_pandas else frame


def index_bars(
    symbol: str, interval: str, start: Any = None, end: Any = None, *, data_dir: Path | str | None = None,
    as_pandas: bool = False,
) -> pl.DataFrame | pd.DataFrame:
    """Index-price bars of one symbol, open times in ``[start, end)`` (columns as :func:`mark_bars`)."""
    return mark_bars(symbol, interval, start, end, data_dir=data_dir, as_pandas=as_pandas, kind="index")


def agg_trades(
    symbol: str, start: Any = None, end: Any = None, *, data_dir: Path | str | None = None, as_pandas: bool = False
) -> pl.DataFrame | pd.DataFrame:
    """Stored aggTrades of one symbol with ``transact_time`` in ``[start, end)``, by id (``storage.persist_aggtrades``).

    Columns ``symbol, agg_trade_id, price, quantity, first_trade_id, last_trade_id, transact_time, is_buyer_maker``.
    """
    frame = read_agg_trades(default_data_dir(data_dir), symbol, optional_ms(start, name="start"),
                            optional_ms(end, name="end"))
    return frame.to_pandas() if as_pandas else frame
