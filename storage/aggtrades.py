"""The ``agg_trades`` dataset: aggregated trades kept as the exchange sent them, by UTC day.

::

    <data_dir>/agg_trades/day=2024-05-01/<stamp>-t0000-g0.parquet

Columns ``symbol, agg_trade_id, price, quantity, first_trade_id, last_trade_id,
transact_time, is_buyer_maker`` (+ ``version``), sorted by ``(symbol, agg_trade_id)``. The
live writer of shard N is ``t<N:04d>``; it shares the bars' machinery, not a copy of it: the
WAL (:class:`~klinestore.storage.wal.Wal` of :class:`AggTrade` rows), the writer lock, atomic
publishes and their recovery (:mod:`~klinestore.storage.txn`), the quarantine of damaged
files, and the dedup rule (:func:`~klinestore.storage.frames.latest` on ``(symbol,
agg_trade_id)``: a trade is a fact, so any two copies agree; a replayed flush or a
compaction's grace period leaves copies). A day partition of this writer is merged into one
file once it holds ``compaction_min_files`` files, or more than one once the day is over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import polars as pl

from klinestore.storage.config import StorageConfig
from klinestore.storage.errors import StorageError
from klinestore.storage.frames import latest
from klinestore.storage.fsguard import prepare_dirs
from klinestore.storage.layout import AGG_TRADES_DIR, FileName, Stamper, data_files, shard_writer, state_dir, wal_dir
from klinestore.storage.locks import WriterLock
from klinestore.storage.quarantine import quarantine_writer, read_skipping
from klinestore.storage.txn import Publish, collect, fsync_file, pending_obsolete, recover
from klinestore.storage.wal import Wal

DAY_MS = 86_400_000
KEY = ("symbol", "agg_trade_id")


class AggTrade(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One aggregated trade (``<symbol>@aggTrade``, ``/fapi/v1/aggTrades``, the aggTrades archives)."""

    symbol: str
    agg_trade_id: int
    price: float
    quantity: float
    first_trade_id: int
    last_trade_id: int
    transact_time: int  # UTC ms
    is_buyer_maker: bool


TRADE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(), "agg_trade_id": pl.Int64(), "price": pl.Float64(), "quantity": pl.Float64(),
    "first_trade_id": pl.Int64(), "last_trade_id": pl.Int64(), "transact_time": pl.Int64(),
    "is_buyer_maker": pl.Boolean(),
}
AGG_TRADE_COLUMNS: tuple[str, ...] = tuple(TRADE_SCHEMA)
_TIME = pl.Datetime("ms", "UTC")


def trades_root(data_dir: Path | str) -> Path:
    return Path(data_dir) / AGG_TRADES_DIR


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def trades_frame(trades: Sequence[AggTrade], stamp: int | None = None) -> pl.DataFrame:
    """A frame of ``trades`` (times as Int64 ms), with a ``version`` column when ``stamp`` is given."""
    columns = list(zip(*(msgspec.structs.astuple(t) for t in trades))) if trades else [()] * len(TRADE_SCHEMA)
    frame = pl.DataFrame(dict(zip(AGG_TRADE_COLUMNS, columns)), schema=TRADE_SCHEMA)
    return frame if stamp is None else frame.with_columns(pl.lit(stamp, pl.Int64).alias("version"))


class TradeStore:
    """One shard's durable aggTrades: ``append`` (WAL), ``flush`` (Parquet by day), ``compact``."""

    def __init__(self, data_dir: Path, config: StorageConfig, *, shard_id: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.config = config
        self.writer = shard_writer(shard_id, "agg_trades")
        self.root = trades_root(self.data_dir)
        self._lock = WriterLock(self.data_dir, self.writer)
        self._stamper = Stamper(self.writer)
        self._wal = Wal(wal_dir(self.data_dir, self.writer), fsync_window=config.wal_fsync_window, row_type=AggTrade)
        self._pending: list[tuple[int, list[AggTrade]]] = []
        self._newest_ms = 0  # the newest trade time seen: "today" for compaction (a simulator's clock runs ahead)
        self._mutex = threading.Lock()
        self._flush_mutex = threading.Lock()
        self._open = False

    def open(self) -> int:
        """Take the writer's lock, finish interrupted publishes, replay the WAL; the rows replayed."""
        prepare_dirs(self.data_dir, state_dir(self.data_dir))
        if not self._lock.acquire():
            holder = self._lock.holder()
            raise StorageError(f"{self.writer} of {self.data_dir} is open in another process (pid {holder})")
        try:
            prepare_dirs(self._wal.directory)
            recover(self.data_dir, self.writer, [self.root])
            quarantine_writer(self.data_dir, self.writer, [self.root])
            replay = self._wal.open()
        except BaseException:
            self._lock.release()
            raise
        for stamp, rows in replay.records:
            self._stamper.observe(stamp)
            self._pending.append((stamp, rows))
            self._newest_ms = max([self._newest_ms, *(t.transact_time for t in rows)])
        self._open = True
        return replay.bars

    def close(self) -> None:
        if not self._open:
            return
        try:
            self.flush()
        finally:
            self._open = False
            self._wal.close()
            self._lock.release()

    def append(self, trades: Sequence[AggTrade]) -> None:
        """Make trades durable (WAL) and pending for the next flush."""
        if not trades:
            return
        stamp = self._stamper.next()
        with self._mutex:
            if not self._open:
                raise StorageError("TradeStore is not open")
            self._wal.append(stamp, trades)
            self._pending.append((stamp, list(trades)))
            self._newest_ms = max(self._newest_ms, trades[-1].transact_time)

    def flush(self) -> int:
        """Publish the pending trades, one new file per day touched; trim the WAL. The rows written."""
        with self._flush_mutex:
            with self._mutex:
                batch, self._pending = self._pending, []
                sealed = self._wal.rotate() if self._open else []
            if not batch and not sealed:
                return 0
            publish = Publish(self.data_dir, self.writer, self._stamper)
            try:
                parts = [trades_frame(rows, stamp) for stamp, rows in batch if rows]
                frame = latest(pl.concat(parts), KEY) if parts else trades_frame([], 0)
                self._write_days(publish, frame, generation=0)
                publish.delete(sealed)
                publish.commit()
            except BaseException:
                publish.abort()
                with self._mutex:
                    self._pending[:0] = batch
                raise
            return frame.height

    def compact(self) -> list[dict]:
        """Merge this writer's files of a day (see the module docstring); the files quarantined."""
        with self._flush_mutex:
            quarantined = quarantine_writer(self.data_dir, self.writer, [self.root])
            today = _day(self._newest_ms or int(time.time() * 1000))
            compact_days(self.data_dir, self.writer, self._stamper, self.config, today=today)
            return quarantined

    def _write_days(self, publish: Publish, frame: pl.DataFrame, *, generation: int) -> None:
        write_days(publish, self.root, frame, self._stamper, self.writer, generation=generation)

    @property
    def pending_rows(self) -> int:
        return sum(len(rows) for _, rows in self._pending)

    def read(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        """This store's trades of ``symbol`` in ``[start_ms, end_ms)``, Parquet plus those not yet
        flushed, by id, times as Int64 ms (what a repair from trades reads)."""
        stored = read_agg_trades(self.data_dir, symbol, start_ms, end_ms)
        stored = stored.with_columns(pl.col("transact_time").dt.epoch("ms"))
        with self._mutex:
            pending = [t for _, rows in self._pending for t in rows
                       if t.symbol == symbol and start_ms <= t.transact_time < end_ms]
        if not pending:
            return stored
        return pl.concat([stored, trades_frame(pending)]).unique(subset=list(KEY), keep="first").sort("agg_trade_id")


def write_days(
    publish: Publish, root: Path, frame: pl.DataFrame, stamper: Stamper, writer: str, *, generation: int = 0
) -> None:
    """One new file of ``writer`` per day of the versioned trades ``frame`` (Int64 ms times), in ``publish``."""
    if frame.is_empty():
        return
    frame = frame.with_columns((pl.col("transact_time") // DAY_MS).alias("_day"))
    for (day,), part in frame.partition_by("_day", as_dict=True).items():
        name = FileName(stamper.next(), writer, min(generation, 999)).name
        tmp = publish.new_file(root / f"day={_day(int(day) * DAY_MS)}" / name)
        out = part.drop("_day").sort(*KEY).with_columns(pl.col("transact_time").cast(_TIME))
        out.write_parquet(tmp, compression="zstd", statistics=True)
        fsync_file(tmp)


def compact_days(data_dir: Path, writer: str, stamper: Stamper, config: StorageConfig, *, today: str) -> None:
    """Merge ``writer``'s files of each day into one: a closed day (before ``today``) once it holds
    two, the current day once it holds ``compaction_min_files`` (the shards' and the importer's alike)."""
    root = trades_root(data_dir)
    collect(data_dir, writer)
    retired = pending_obsolete(data_dir, writer)
    for day_dir in sorted(root.glob("day=*")):
        files = [(n, p) for n, p in data_files(day_dir, writer) if p not in retired]
        closed = day_dir.name.partition("=")[2] < today
        if len(files) < (2 if closed else config.compaction_min_files):
            continue
        paths = [p for _, p in files]
        stored = pl.read_parquet([str(p) for p in paths])
        frame = latest(stored.with_columns(pl.col("transact_time").dt.epoch("ms")), KEY)
        publish = Publish(data_dir, writer, stamper, grace=config.compaction_grace)
        try:
            write_days(publish, root, frame, stamper, writer, generation=max(n.generation for n, _ in files) + 1)
            publish.retire(paths)
            publish.commit()
        except BaseException:
            publish.abort()
            raise


def _day_files(data_dir: Path | str, start_ms: int | None, end_ms: int | None) -> list[Path]:
    lo = None if start_ms is None else f"day={_day(start_ms)}"
    hi = None if end_ms is None else f"day={_day(end_ms - 1)}"
    return [p for d in sorted(trades_root(data_dir).glob("day=*"))
            if (lo is None or d.name >= lo) and (hi is None or d.name <= hi) for _, p in data_files(d)]


def read_agg_trades(
    data_dir: Path | str, symbol: str, start_ms: int | None = None, end_ms: int | None = None, *,
    from_id: int | None = None, limit: int | None = None, newest: bool = False,
) -> pl.DataFrame:
    """One symbol's aggTrades with ``transact_time`` in ``[start_ms, end_ms)``, by id (UTC datetimes).

    ``from_id``: only ids from it on; ``limit``: only the first ``limit`` (the last with
    ``newest``, read a day at a time from the newest day back, so the cost follows ``limit``).
    """
    if newest and limit is not None:
        return _newest(data_dir, symbol, start_ms, end_ms, from_id, limit)

    def read(files: list[Path]) -> pl.DataFrame:
        if not files:
            return pl.DataFrame(schema={**TRADE_SCHEMA, "transact_time": _TIME})
        lazy = pl.scan_parquet([str(f) for f in files]).filter(pl.col("symbol") == symbol)
        if start_ms is not None:
            lazy = lazy.filter(pl.col("transact_time") >= pl.lit(start_ms).cast(_TIME))
        if end_ms is not None:
            lazy = lazy.filter(pl.col("transact_time") < pl.lit(end_ms).cast(_TIME))
        if from_id is not None:
            lazy = lazy.filter(pl.col("agg_trade_id") >= from_id)
        frame = latest(lazy.collect(), KEY).select(AGG_TRADE_COLUMNS).sort("agg_trade_id")
        return frame if limit is None else frame.head(limit)

    what = f"aggTrades under {trades_root(data_dir)}"
    return read_skipping(lambda: _day_files(data_dir, start_ms, end_ms), read, what)


def _newest(data_dir: Path | str, symbol: str, start_ms: int | None, end_ms: int | None, from_id: int | None,
            limit: int) -> pl.DataFrame:
    days = [d.name.partition("=")[2] for d in sorted(trades_root(data_dir).glob("day=*"))]
    lo = None if start_ms is None else _day(start_ms)
    hi = None if end_ms is None else _day(end_ms - 1)
    parts: list[pl.DataFrame] = []
    found = 0
    for day in reversed([d for d in days if (lo is None or d >= lo) and (hi is None or d <= hi)]):
        begin = int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() * 1000)
        a = begin if start_ms is None else max(begin, start_ms)
        b = begin + DAY_MS if end_ms is None else min(begin + DAY_MS, end_ms)
        part = read_agg_trades(data_dir, symbol, a, b, from_id=from_id)
        parts.insert(0, part)
        found += part.height
        if found >= limit:
            break
    if not parts:
        return read_agg_trades(data_dir, symbol, 0, 0)
    return pl.concat(parts).tail(limit)


def agg_trades_relation_sql(data_dir: Path | str, *, skip: Collection[Path] = ()) -> str:
    """A DuckDB ``SELECT`` of every stored aggTrade, one row per ``(symbol, agg_trade_id)``."""
    root = trades_root(data_dir).resolve()
    left_out = {Path(p).resolve() for p in skip}
    files = [p for p in sorted(root.glob("day=*/*.parquet")) if FileName.parse(p.name) and p.resolve() not in left_out]
    typed_empty = ("NULL::VARCHAR AS symbol, NULL::BIGINT AS agg_trade_id, NULL::DOUBLE AS price, "
                   "NULL::DOUBLE AS quantity, "
                   "NULL::BIGINT AS first_trade_id, NULL::BIGINT AS last_trade_id, NULL::TIMESTAMPTZ AS transact_time, "
                   "NULL::BOOLEAN AS is_buyer_maker, NULL::BIGINT AS version")
    quoted = ["'" + str(p).replace("'", "''") + "'" for p in files]
    if not left_out:
        source = "'" + str(root / "day=*" / "*.parquet").replace("'", "''") + "'"  # read at query time
    else:
        source = f"[{', '.join(quoted)}]" if quoted else "'" + str(root / "day=*" / "none").replace("'", "''") + "'"
    values = ", ".join(f"arg_max({c}, version) AS {c}" for c in AGG_TRADE_COLUMNS if c not in KEY)
    return (
        f"SELECT symbol, agg_trade_id, {values} FROM ("
        f"SELECT * FROM read_parquet({source}, hive_partitioning = false, allow_empty = true) "
        f"UNION ALL BY NAME SELECT {typed_empty} WHERE false) GROUP BY symbol, agg_trade_id"
    )
