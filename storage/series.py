"""Mark-price bars, index-price bars and funding events: USD-M series stored as bar-shaped rows.

Each series is its own dataset (``mark_bars/``, ``index_bars/``, ``funding/``, see
:mod:`klinestore.storage.layout`) written by its own writers (``m0000``, ``x0000``, ``f0000``),
and each goes through the klines' own machinery, not a copy of it: :class:`BarStore` (the WAL,
atomic publishes, resampling, compaction, quarantine), the dedup rule (largest version per
key) and :class:`Dataset` for reading. The rows are :class:`Bar` records:

* a mark (index) bar is a bar of the mark (index) price; only ``symbol, interval, open_time,
  close_time, open, high, low, close, is_complete, source`` are public. ``trades`` and
  ``volume`` hold the seconds sampled (Binance's "number of basic data", 60 a minute): the
  resampler leaves minutes without volume out of open/high/low/close, and no minute of a
  price series is empty;
* a funding event is a one-minute row at its funding time: ``open`` is the rate, ``close``
  the mark price of the event (NaN when it is not known, NULL in SQL). Binance settles
  funding on whole hours, so a funding time that is not a whole minute is refused
  (:class:`BarError`) rather than rounded.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from pathlib import Path

import polars as pl

from klinestore.core.intervals import interval_ms
from klinestore.core.schema import Bar
from klinestore.storage.aggtrades import TradeStore
from klinestore.storage.config import StorageConfig
from klinestore.storage.dataset import Dataset
from klinestore.storage.errors import StorageError
from klinestore.storage.layout import SERIES
from klinestore.storage.store import BarStore, FlushReport, RestartState

#: The public columns of ``mark_bars`` / ``index_bars``, in order.
PRICE_BAR_COLUMNS: tuple[str, ...] = (
    "symbol", "interval", "open_time", "close_time", "open", "high", "low", "close", "is_complete", "source",
)
#: The public columns of ``funding``, in order.
FUNDING_COLUMNS: tuple[str, ...] = ("symbol", "funding_time", "funding_rate", "mark_price")
#: The interval a funding event is stored under (an internal detail: views and readers hide it).
FUNDING_INTERVAL = "1m"
PRICE_SERIES: tuple[str, ...] = ("mark", "index")


def price_bar(
    symbol: str, interval: str, open_time: int, ohlc: tuple[float, float, float, float], *, source: str = "ws",
    is_complete: bool = True, seconds: int | None = None,
) -> Bar:
    """A mark or index bar of ``interval`` opening at ``open_time``, ``seconds`` its 1 s prices sampled."""
    o, h, low, c = ohlc
    if seconds is None:
        seconds = interval_ms(interval) // 1000
    return Bar(symbol, interval, open_time, open_time + interval_ms(interval) - 1, o, h, low, c,
               float(seconds), 0.0, seconds, 0.0, 0.0, source, is_complete)


def price_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Mark or index klines as archives and REST give them (volumes 0, ``trades`` the seconds
    sampled, or 0) as the dataset keeps them: ``trades`` and ``volume`` the seconds sampled."""
    seconds = (pl.col("close_time") - pl.col("open_time") + 1) // 1000
    counted = pl.when(pl.col("trades") > 0).then(pl.col("trades")).otherwise(seconds)
    return frame.with_columns(counted.alias("trades")).with_columns(pl.col("trades").cast(pl.Float64).alias("volume"))


def funding_row(symbol: str, funding_time: int, rate: float, mark_price: float | None, *, source: str = "ws") -> Bar:
    """A funding event as the row the ``funding`` dataset stores (see the module docstring)."""
    mark = math.nan if mark_price is None else mark_price
    return Bar(symbol, FUNDING_INTERVAL, funding_time, funding_time, rate, rate, rate, mark,
               0.0, 0.0, 0, 0.0, 0.0, source, True)


def _check_kind(kind: str) -> None:
    if kind not in SERIES:
        raise StorageError(f"unknown series {kind!r}; expected one of {', '.join(SERIES)}")


def series_relation_sql(
    data_dir: Path | str, kind: str, interval: str | None = None, *, skip: Collection[Path] = ()
) -> str:
    """A DuckDB ``SELECT`` of a series with its public columns (deduplicated, UTC timestamps).

    ``kind`` ``mark`` or ``index``: :data:`PRICE_BAR_COLUMNS` of one interval (all when
    None); ``funding``: :data:`FUNDING_COLUMNS` (``interval`` is ignored).
    """
    _check_kind(kind)
    dataset = Dataset(data_dir, kind)
    if kind == "funding":
        return (
            "SELECT symbol, open_time AS funding_time, open AS funding_rate, "
            "CASE WHEN isnan(close) THEN NULL ELSE close END AS mark_price "
            f"FROM ({dataset.relation_sql(FUNDING_INTERVAL, skip=skip)})"
        )
    return f"SELECT {', '.join(PRICE_BAR_COLUMNS)} FROM ({dataset.relation_sql(interval, skip=skip)})"


def read_price_bars(
    data_dir: Path | str, kind: str, symbol: str, interval: str, start_ms: int | None = None, end_ms: int | None = None,
    *, wal: bool = False,
) -> pl.DataFrame:
    """Mark (``kind="mark"``) or index bars of one symbol, open times in ``[start_ms, end_ms)``, oldest first."""
    if kind not in PRICE_SERIES:
        raise StorageError(f"unknown price series {kind!r}; expected mark or index")
    return Dataset(data_dir, kind).read(symbol, interval, start_ms, end_ms, wal=wal).select(PRICE_BAR_COLUMNS)


def read_funding(
    data_dir: Path | str, symbol: str, start_ms: int | None = None, end_ms: int | None = None, *, wal: bool = False
) -> pl.DataFrame:
    """Funding events of one symbol with funding times in ``[start_ms, end_ms)``, oldest first."""
    frame = Dataset(data_dir, "funding").read(symbol, FUNDING_INTERVAL, start_ms, end_ms, wal=wal)
    return frame.select(
        "symbol", pl.col("open_time").alias("funding_time"), pl.col("open").alias("funding_rate"),
        pl.when(pl.col("close").is_nan()).then(None).otherwise(pl.col("close")).alias("mark_price"),
    )


class SeriesStores:
    """The live service's stores of the three series, one :class:`BarStore` each, handled as one,
    plus the :class:`TradeStore` of ``agg_trades`` when ``storage.persist_aggtrades`` is on.

    Mark and index bars resample to ``storage.resample_intervals`` like klines; funding
    events are not resampled.
    """

    def __init__(self, data_dir: Path, config: StorageConfig, *, shard_id: int = 0) -> None:
        unresampled = dataclasses.replace(config, resample_intervals=())
        self.stores: dict[str, BarStore] = {
            kind: BarStore(data_dir, unresampled if kind == "funding" else config, shard_id=shard_id, dataset=kind)
            for kind in SERIES
        }
        self.trades = TradeStore(data_dir, config, shard_id=shard_id) if config.persist_aggtrades else None
        self.trades_replayed = 0

    @property
    def sinks(self) -> Mapping[str, BarStore | TradeStore]:
        """The sink of each series, and of ``agg_trades`` (``append`` makes rows durable in its WAL)."""
        return {**self.stores, **({"agg_trades": self.trades} if self.trades is not None else {})}

    def _all(self) -> list[BarStore | TradeStore]:
        return [*self.stores.values(), *([self.trades] if self.trades is not None else [])]

    def open(self) -> dict[str, RestartState]:
        opened: list[BarStore | TradeStore] = []
        states = {}
        try:
            for kind, store in self.stores.items():
                states[kind] = store.open()
                opened.append(store)
            if self.trades is not None:
                self.trades_replayed = self.trades.open()
        except BaseException:
            for done in opened:
                done.close()
            raise
        return states

    def flush(self) -> dict[str, FlushReport]:
        if self.trades is not None:
            self.trades.flush()
        return {kind: store.flush() for kind, store in self.stores.items()}

    def compact(self) -> list[dict]:
        """Compact every series; the files quarantined meanwhile."""
        out = [q for store in self.stores.values() for q in store.compact().quarantined]
        return out + (self.trades.compact() if self.trades is not None else [])

    def close(self) -> None:
        """Flush and release every store, even when one fails (the first failure is raised)."""
        failure: BaseException | None = None
        for store in self._all():
            try:
                store.close()
            except Exception as exc:  # noqa: BLE001 - the others still close; raised below
                failure = failure or exc
        if failure is not None:
            raise failure

    @property
    def pending_rows(self) -> int:
        trades = self.trades.pending_rows if self.trades is not None else 0
        return trades + sum(store.pending_bars for store in self.stores.values())
