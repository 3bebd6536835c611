"""Exports of the futures series: funding, mark/index bars and aggTrades, and freqtrade's futures extras.

* :func:`export_series` (``klinestore export --what funding|mark|index|aggtrades``): one
  symbol's rows with times in ``[start, end)`` as Parquet or CSV, the public columns of the
  SQL views (CSV: header, ISO UTC times). Mark and index bars of an interval not stored are
  resampled from the stored 1m bars (complete buckets only, unless ``allow_incomplete``).
* :func:`write_freqtrade_extras`: what a freqtrade futures backtest loads beside the candles,
  in its data directory's ``futures/`` folder, in its own file layout (freqtrade's
  ``FeatherDataHandler``): ``<pair>-<tf>-mark.feather`` (mark candles, ``volume`` 0 as its
  Binance download has) and ``<pair>-<tf>-funding_rate.feather`` (one row per funding event:
  ``open`` the rate, the other columns 0, as freqtrade stores ccxt's funding history), for
  each timeframe of :data:`FREQTRADE_FUNDING_TIMEFRAMES`: freqtrade reads them at its
  exchange option ``mark_ohlcv_timeframe`` / ``funding_fee_timeframe``, ``8h`` up to 2024.x
  and ``1h`` in later releases, so both are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from klinestore.core.symbols import check_symbol
from klinestore.queries.errors import ExportError
from klinestore.queries.files import atomic_output
from klinestore.queries.output import presentable
from klinestore.queries.times import check_range, optional_ms, short
from klinestore.storage import PRICE_BAR_COLUMNS, Dataset, read_agg_trades, read_funding, resample

WHATS: tuple[str, ...] = ("bars", "funding", "mark", "index", "aggtrades")
SERIES_FORMATS: tuple[str, ...] = ("parquet", "csv")
#: freqtrade's ``mark_ohlcv_timeframe`` / ``funding_fee_timeframe`` for Binance futures:
#: ``8h`` (freqtrade <= 2024.x, ``exchange.py`` ``_ft_has_default``), ``1h`` after.
FREQTRADE_FUNDING_TIMEFRAMES: tuple[str, ...] = ("8h", "1h")
_NS = pl.Datetime("ns", "UTC")


@dataclass(frozen=True, slots=True)
class SeriesExportReport:
    path: Path
    what: str
    symbol: str
    rows: int

    def summary(self) -> str:
        return f"exported {self.rows:,} {self.what} rows of {self.symbol} to {self.path}"


def series_frame(
    data_dir: Path, what: str, symbol: str, start_ms: int | None, end_ms: int | None, interval: str | None = None,
    *, allow_incomplete: bool = False,
) -> pl.DataFrame:
    """The rows an export of ``what`` writes (public columns, UTC datetimes)."""
    if what == "funding":
        return read_funding(data_dir, symbol, start_ms, end_ms)
    if what == "aggtrades":
        return read_agg_trades(data_dir, symbol, start_ms, end_ms)
    if what not in ("mark", "index"):
        raise ExportError(f"unknown series {what!r}; expected one of {', '.join(WHATS[1:])}")
    if interval is None:
        raise ExportError(f"--what {what} needs --interval")
    dataset = Dataset(data_dir, what)
    if interval == "1m" or interval in dataset.intervals():
        frame = dataset.read(symbol, interval, start_ms, end_ms)
    else:
        frame = resample(dataset.read(symbol, "1m", start_ms, end_ms), interval)
        if start_ms is not None:
            frame = frame.filter(pl.col("open_time").dt.epoch("ms") >= start_ms)
    if not allow_incomplete:
        frame = frame.filter(pl.col("is_complete"))
    return frame.select(PRICE_BAR_COLUMNS)


def export_series(
    what: str, symbol: str, start: Any, end: Any, fmt: str, out: Path | str, *, data_dir: Path,
    interval: str | None = None, allow_incomplete: bool = False,
) -> SeriesExportReport:
    """Write one symbol's ``what`` rows with times in ``[start, end)`` to ``out`` (see the module docstring)."""
    if fmt not in SERIES_FORMATS:
        raise ExportError(f"--what {what} exports as {' or '.join(SERIES_FORMATS)}, not {fmt!r}")
    symbol = check_symbol(symbol)
    start_ms, end_ms = optional_ms(start, name="start"), optional_ms(end, name="end")
    if start_ms is not None:
        check_range(start_ms, end_ms)
    frame = series_frame(Path(data_dir), what, symbol, start_ms, end_ms, interval, allow_incomplete=allow_incomplete)
    if frame.is_empty():
        span = f"[{short(start_ms) if start_ms is not None else '-'}, {short(end_ms) if end_ms is not None else '-'})"
        raise ExportError(f"no {what} rows stored for {symbol} in {span}")
    with atomic_output(Path(out)) as tmp:
        if fmt == "parquet":
            frame.write_parquet(tmp, compression="zstd")
        else:
            presentable(frame).write_csv(tmp, float_scientific=False)
    return SeriesExportReport(Path(out), what, symbol, frame.height)


def write_freqtrade_extras(
    data_dir: Path, symbol: str, candles: Path, start_ms: int, end_ms: int, *, allow_incomplete: bool = False,
) -> list[Path]:
    """Mark and funding-rate feathers beside freqtrade futures ``candles`` (see the module docstring).

    Returns the files written; a series with nothing stored in the range writes no file (so
    freqtrade says "No history" for it, as it would for any missing data).
    """
    _pandas()
    stem = candles.name.split("-")[0]
    written = []
    funding = read_funding(data_dir, symbol, start_ms, end_ms)
    for tf in FREQTRADE_FUNDING_TIMEFRAMES:
        mark = series_frame(data_dir, "mark", symbol, start_ms, end_ms, tf, allow_incomplete=allow_incomplete)
        if mark.height:
            frame = mark.select(pl.col("open_time").cast(_NS).alias("date"), "open", "high", "low", "close",
                                pl.lit(0.0).alias("volume"))
            written.append(_feather(frame, candles.parent / f"{stem}-{tf}-mark.feather"))
        if funding.height:
            frame = funding.select(pl.col("funding_time").cast(_NS).alias("date"), pl.col("funding_rate").alias("open"),
                                   *(pl.lit(0.0).alias(c) for c in ("high", "low", "close", "volume")))
            written.append(_feather(frame, candles.parent / f"{stem}-{tf}-funding_rate.feather"))
    return written


def _feather(frame: pl.DataFrame, path: Path) -> Path:
    with atomic_output(path) as tmp:
        frame.to_pandas().to_feather(tmp, compression="lz4")
    return path


def _pandas() -> None:
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise ExportError("the freqtrade format needs pandas: pip install 'klinestore[pandas]'") from None
