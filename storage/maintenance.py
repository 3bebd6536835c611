"""Offline maintenance of a data directory: compacting every writer that no process holds."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from klinestore.storage.aggtrades import TradeStore, compact_days, trades_root
from klinestore.storage.compaction import CompactReport, compact
from klinestore.storage.config import StorageConfig
from klinestore.storage.layout import DATASETS, IMPORT_WRITER, Stamper, dataset_root, is_writer, state_dir
from klinestore.storage.locks import WriterLock
from klinestore.storage.quarantine import quarantine_writer
from klinestore.storage.txn import recover


def writers(data_dir: Path) -> list[str]:
    """Every writer that has files, a WAL or a lock in ``data_dir``."""
    found = {IMPORT_WRITER}
    for market in DATASETS:
        for path in dataset_root(data_dir, market).glob("interval=*/month=*/*.parquet"):
            found.add(path.name.split("-")[1])
    if state_dir(data_dir).is_dir():
        found.update(p.stem for p in state_dir(data_dir).glob("*.lock"))
    return sorted(w for w in found if is_writer(w))


def compact_all(data_dir: Path, config: StorageConfig) -> tuple[CompactReport, list[str]]:
    """Compact each writer whose lock is free (recovering it first); return the busy ones.

    Retired inputs are deleted at once (grace 0): this is a maintenance command; the live
    service compacts its own files with ``storage.compaction_grace``.
    """
    report, busy = CompactReport(), []
    for writer in writers(Path(data_dir)):
        lock = WriterLock(Path(data_dir), writer)
        if not lock.acquire(blocking=writer == IMPORT_WRITER):
            busy.append(writer)
            continue
        try:
            recover(Path(data_dir), writer, [*(dataset_root(data_dir, m) for m in DATASETS), trades_root(data_dir)])
            report.add(compact(Path(data_dir), writer, Stamper(writer), fan_in=config.compaction_min_files))
            if writer.startswith("t"):  # a shard's aggTrades (storage.aggtrades)
                trades = TradeStore(Path(data_dir), replace(config, compaction_grace=0), shard_id=int(writer[1:]))
                report.quarantined += trades.compact()
            elif writer == IMPORT_WRITER and trades_root(data_dir).is_dir():  # imported aggTrades archives
                report.quarantined += quarantine_writer(Path(data_dir), writer, [trades_root(data_dir)])
                today = time.strftime("%Y-%m-%d", time.gmtime())
                compact_days(Path(data_dir), writer, Stamper(writer), replace(config, compaction_grace=0), today=today)
        finally:
            lock.release()
    return report, busy
