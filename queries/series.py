"""Funding events and mark/index price bars as rows: what a Binance-compatible gateway serves.

Two small functions over storage's series datasets (:mod:`klinestore.storage.series`), shaped
for ``/fapi/v1/fundingRate`` and ``/fapi/v1/markPriceKlines`` / ``indexPriceKlines`` but
free of HTTP: they take epoch ms, return plain tuples oldest first, and apply Binance's
``limit`` rule (from ``start_ms``: the first ``limit`` rows; without it: the last ``limit``).
Frames of the same rows come from :func:`funding` and :func:`price_bars`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import polars as pl

from klinestore.queries.errors import QueryError
from klinestore.storage import read_funding, read_price_bars


class FundingRow(NamedTuple):
    symbol: str
    funding_time: int  # epoch ms
    funding_rate: float
    mark_price: float | None  # None when the event's mark price is not known


class PriceKline(NamedTuple):
    open_time: int  # epoch ms
    open: float
    high: float
    low: float
    close: float
    close_time: int


def funding(data_dir: Path | str, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
    """Funding events of ``symbol`` with ``funding_time`` in ``[start_ms, end_ms)`` (UTC datetimes)."""
    return read_funding(data_dir, symbol, start_ms, end_ms)


def price_bars(
    data_dir: Path | str, kind: str, symbol: str, interval: str, start_ms: int | None = None, end_ms: int | None = None
) -> pl.DataFrame:
    """Mark (``kind="mark"``) or index bars of one symbol, open times in ``[start_ms, end_ms)``."""
    if kind not in ("mark", "index"):
        raise QueryError(f"unknown price series {kind!r}; expected mark or index")
    return read_price_bars(data_dir, kind, symbol, interval, start_ms, end_ms)


def funding_rows(
    data_dir: Path | str, symbol: str, start_ms: int | None = None, end_ms: int | None = None, limit: int = 100
) -> list[FundingRow]:
    """Funding events with ``start_ms <= funding_time <= end_ms`` (inclusive, as Binance), at most ``limit``."""
    frame = _epoch(funding(data_dir, symbol, start_ms, None if end_ms is None else end_ms + 1), "funding_time")
    frame = _limited(frame, limit, from_start=start_ms is not None)
    return [FundingRow(*row) for row in frame.iter_rows()]


def price_klines(
    data_dir: Path | str, kind: str, symbol: str, interval: str, start_ms: int | None = None,
    end_ms: int | None = None, limit: int = 500,
) -> list[PriceKline]:
    """Mark or index klines with ``start_ms <= open_time <= end_ms`` (inclusive, as Binance), at most ``limit``."""
    frame = price_bars(data_dir, kind, symbol, interval, start_ms, None if end_ms is None else end_ms + 1)
    frame = _limited(_epoch(frame, "open_time", "close_time"), limit, from_start=start_ms is not None)
    columns = ("open_time", "open", "high", "low", "close", "close_time")
    return [PriceKline(*row) for row in frame.select(columns).iter_rows()]


def _epoch(frame: pl.DataFrame, *columns: str) -> pl.DataFrame:
    return frame.with_columns(pl.col(*columns).dt.epoch("ms"))


def _limited(frame: pl.DataFrame, limit: int, *, from_start: bool) -> pl.DataFrame:
    if limit < 1:
        raise QueryError(f"limit must be at least 1, got {limit}")
    return frame.head(limit) if from_start else frame.tail(limit)
