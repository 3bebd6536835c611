"""Importing the USD-M series' archives: mark and index klines, funding rates, aggTrades as trades.

The archive host lays them out as (``ingest.protocol.archive``)::

    .../markPriceKlines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip     the kline layout: -> mark_bars/
    .../indexPriceKlines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip    the kline layout: -> index_bars/
    .../fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip      calc_time,funding_interval_hours,last_funding_rate
    .../aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01-01.zip       -> agg_trades/ (and 1m bars, as before)

Mark and index klines go through :func:`import_archives` into their dataset. A fundingRate
archive has no mark price: its events are stored with a NULL one, and only those not stored
yet (an event from the stream or REST keeps its mark price). Every file is verified (its
``.CHECKSUM`` when present) and validated before anything is published, as for klines; the
importer writes as ``imp`` under its lock, in one atomic publish per call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from klinestore.core.errors import InvalidSymbol
from klinestore.core.symbols import check_symbol
from klinestore.storage.aggtrades import KEY as TRADE_KEY
from klinestore.storage.aggtrades import trades_root, write_days
from klinestore.storage.archive import ArchiveFile, describe, find_archives, read_trades, verified_bytes
from klinestore.storage.config import StorageConfig
from klinestore.storage.dataset import Dataset
from klinestore.storage.errors import ArchiveError
from klinestore.storage.frames import from_bars, latest
from klinestore.storage.importer import ImportReport, Progress, import_archives
from klinestore.storage.layout import DATASETS, IMPORT_WRITER, Stamper, dataset_root
from klinestore.storage.locks import WriterLock
from klinestore.storage.series import FUNDING_INTERVAL, funding_row
from klinestore.storage.txn import Publish, recover
from klinestore.storage.writer import write_partitions

SERIES_KINDS: tuple[str, ...] = ("mark", "index", "funding")
_FUNDING_NAME = re.compile(r"(?P<symbol>[A-Z0-9]+)-fundingRate-\d{4}-\d{2}\.(?:zip|csv)")
_FUNDING_HEADER = "calc_time,funding_interval_hours,last_funding_rate"
_MICROS = 10**14


def series_of(path: Path) -> str | None:
    """The series an archive holds, from the host's layout: ``mark``, ``index``, ``funding``, or None
    (klines, aggTrades)."""
    if _FUNDING_NAME.fullmatch(path.name):
        return "funding"
    if "markPriceKlines" in path.parts:
        return "mark"
    if "indexPriceKlines" in path.parts:
        return "index"
    return None


def import_series(
    paths: Sequence[Path], data_dir: Path, config: StorageConfig, kind: str, *, symbol: str | None = None,
    interval: str | None = None,
) -> ImportReport:
    """Import ``kind`` archives (``mark``, ``index`` or ``funding``)."""
    if kind in ("mark", "index"):
        return import_archives(paths, data_dir, config, market=kind, symbol=symbol, interval=interval)
    if kind != "funding":
        raise ArchiveError(str(paths[0]) if paths else "", f"unknown series {kind!r}; expected mark, index or funding")
    return _import_funding(find_archives(list(paths)), Path(data_dir), symbol)


def read_funding_archive(path: Path, symbol: str | None = None) -> pl.DataFrame:
    """The validated events of one fundingRate archive: ``symbol, funding_time`` (ms), ``funding_rate``."""
    match = _FUNDING_NAME.fullmatch(path.name)
    chosen = symbol or (match["symbol"] if match else None)
    if chosen is None:
        raise ArchiveError(str(path), "cannot tell the symbol from the file name; pass --symbol")
    try:
        chosen = check_symbol(chosen)
    except InvalidSymbol as exc:
        raise ArchiveError(str(path), str(exc)) from None
    rows = []
    for number, line in enumerate(verified_bytes(path).decode("utf-8", errors="replace").splitlines(), start=1):
        line = line.strip()
        if not line or (number == 1 and line.startswith("calc_time")):
            continue
        fields = line.split(",")
        try:
            if len(fields) != 3:
                raise ValueError(f"{len(fields)} fields, expected 3 ({_FUNDING_HEADER})")
            when, rate = int(fields[0]), float(fields[2])
            int(fields[1])
            if not -1 < rate < 1:
                raise ValueError(f"funding rate {rate} outside (-1, 1)")
        except ValueError as exc:
            raise ArchiveError(str(path), f"line {number}: {exc}") from None
        rows.append((chosen, when // 1000 if when >= _MICROS else when, rate))
    return pl.DataFrame(rows, schema={"symbol": pl.String, "funding_time": pl.Int64, "funding_rate": pl.Float64},
                        orient="row")


def _import_funding(files: list[Path], data_dir: Path, symbol: str | None) -> ImportReport:
    report = ImportReport(files=len(files))
    events = [read_funding_archive(path, symbol) for path in files]  # everything validated first
    frame = pl.concat(events).unique(subset=["symbol", "funding_time"], keep="last") if events else None
    if frame is None or frame.is_empty():
        return report
    report.rows = frame.height
    stamper = Stamper(IMPORT_WRITER)
    with WriterLock(data_dir, IMPORT_WRITER):
        recover(data_dir, IMPORT_WRITER, [dataset_root(data_dir, m) for m in DATASETS])
        stored = pl.concat([
            Dataset(data_dir, "funding").read(s, FUNDING_INTERVAL, wal=True).select("symbol", "open_time")
            for s in frame.get_column("symbol").unique().to_list()
        ]).with_columns(pl.col("open_time").dt.epoch("ms").alias("funding_time"))
        new = frame.join(stored.select("symbol", "funding_time"), on=["symbol", "funding_time"], how="anti")
        report.unchanged = frame.height - new.height
        ordered = new.sort("symbol", "funding_time").iter_rows()
        bars = [funding_row(s, t, r, None, source="import") for s, t, r in ordered]
        for bar in bars:
            if bar.open_time % 60_000:
                raise ArchiveError("fundingRate", f"{bar.symbol} funding time {bar.open_time} is not a whole minute")
        if bars:
            publish = Publish(data_dir, IMPORT_WRITER, stamper)
            try:
                stamp = stamper.next()
                write_partitions(publish, dataset_root(data_dir, "funding"), from_bars(bars, [stamp] * len(bars)))
                publish.commit()
            except BaseException:
                publish.abort()
                raise
        report.written = len(bars)
    return report


def import_trade_archives(paths: Sequence[Path], data_dir: Path, *, symbol: str | None = None) -> int:
    """Keep the trades of aggTrades archives in the ``agg_trades`` dataset; the trades read."""
    specs = [describe(p, symbol=symbol) for p in find_archives(list(paths))]
    specs = [s for s in specs if s.kind == "aggTrades"]
    frames = [_trades(spec) for spec in specs]  # everything validated first
    if not frames:
        return 0
    data_dir = Path(data_dir)
    stamper = Stamper(IMPORT_WRITER)
    with WriterLock(data_dir, IMPORT_WRITER):
        recover(data_dir, IMPORT_WRITER, [dataset_root(data_dir, m) for m in DATASETS] + [trades_root(data_dir)])
        stamp = stamper.next()
        frame = latest(pl.concat(frames).with_columns(pl.lit(stamp, pl.Int64).alias("version")), TRADE_KEY)
        publish = Publish(data_dir, IMPORT_WRITER, stamper)
        try:
            write_days(publish, trades_root(data_dir), frame, stamper, IMPORT_WRITER)
            publish.commit()
        except BaseException:
            publish.abort()
            raise
    return frame.height


def _trades(spec: ArchiveFile) -> pl.DataFrame:
    trades = read_trades(spec)
    return trades.select(
        pl.lit(spec.symbol).alias("symbol"), "agg_trade_id", pl.col("price").cast(pl.Float64),
        pl.col("quantity").cast(pl.Float64), "first_trade_id", "last_trade_id", "transact_time", "is_buyer_maker",
    )


def import_all(
    paths: Sequence[Path], data_dir: Path, config: StorageConfig, *, series: str | None = None,
    symbol: str | None = None, interval: str | None = None, progress: Progress | None = None,
) -> ImportReport:
    """USD-M archives of any kind: each file to its dataset (:func:`series_of`, or ``series`` for all).

    Klines and aggTrades go to the bars as :func:`import_archives` does; aggTrades archives
    are also kept as trades when ``storage.persist_aggtrades`` is on.
    """
    files = find_archives(list(paths))
    groups: dict[str | None, list[Path]] = {}
    for path in files:
        groups.setdefault(series or series_of(path), []).append(path)
    total = ImportReport()
    for kind, group in groups.items():
        if kind is None:
            report = import_archives(group, data_dir, config, symbol=symbol, interval=interval, progress=progress)
            if config.persist_aggtrades:
                import_trade_archives(group, data_dir, symbol=symbol)
        else:
            report = import_series(group, data_dir, config, kind, symbol=symbol, interval=interval)
        for name in ("files", "rows", "written", "resampled", "unchanged"):
            setattr(total, name, getattr(total, name) + getattr(report, name))
        total.seconds += report.seconds
    return total
