"""The data-quality side of the service: DataQual, reconciliation, gaps, alerts and their tables.

``QualityJobs`` composes the pieces and schedules them on the service's ``JobScheduler``:

=================  =========================================  ============================================
job                period                                     does
=================  =========================================  ============================================
heartbeat          ``websocket.heartbeat.check_interval``     resyncs seen, DataQual scored, changes logged,
                                                              alerts evaluated
dataqual           ``jobs.dataqual_interval``                 one ``dataqual`` row per symbol
reconcile_klines   ``websocket.reconciliation.kline_interval``  fallback: REST closed bars since the last run (REST wins);
                                                              WebSocket-only: resampled 1m vs 5m/15m/1h/4h
reconcile_trades   ``...reconciliation.aggtrade_interval``    WebSocket-only: 1m vs the aggTrade window
depth_check        ``...reconciliation.depth_interval``       snapshot check, resync when behind
gap_check          ``jobs.gap_check_interval``                open gap records against storage
publish            ``jobs.publish_interval``                  connection events and API calls drained,
                                                              tables published as Parquet
=================  =========================================  ============================================

Order of life: ``attach`` (the feed's gap hooks, before the feed starts), ``open`` (the DuckDB
file, the gap records left open), ``start`` (restart gaps, then the jobs), and at shutdown,
after the feed and storage are closed, ``finish`` (a last gap check, DataQual record and
publish, then the database is closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from klinestore.core.times import iso
from klinestore.ingest.feed import Feed
from klinestore.ingest.klines import Gap
from klinestore.ingest.sink import BarSink
from klinestore.jobs.alerts import AlertMonitor
from klinestore.jobs.archive_fill import FIRST_RUN_AFTER_S, ArchiveFill
from klinestore.jobs.config import JobSettings
from klinestore.jobs.dataqual import DataQualModel
from klinestore.jobs.depth import DepthChecker
from klinestore.jobs.drain import TableDrain
from klinestore.jobs.gaps import GapKeeper
from klinestore.jobs.heartbeat import QualityMonitor
from klinestore.jobs.reconciler import KlineReconciler
from klinestore.jobs.scheduler import JobScheduler
from klinestore.storage import RestartState
from klinestore.storage.tables import QualityDB

log = logging.getLogger(__name__)

class QualityJobs:
    """DataQual, reconciliation, gap records, alerts and the DuckDB tables of one service."""

    def __init__(self, config: JobSettings, feed: Feed, sink: BarSink, data_dir: Path) -> None:
        self.config = config
        self.feed = feed
        self.db = QualityDB(data_dir, shard_id=config.sharding.shard_id)
        ws, jobs = config.websocket, config.jobs
        self.model = DataQualModel(half_life_s=jobs.dataqual_half_life, stale_after_s=jobs.stale_after)
        self.started_ms: int | None = None
        self.gaps = GapKeeper(self.db, data_dir, feed.clock)
        self.depth = DepthChecker(
            lambda: feed.state.books, feed.rest, self.db, self.model, feed.clock.now_ms,
            threshold=ws.reconciliation.depth_gap_threshold,
            push_s=lambda: int(ws.streams.depth_speed.removesuffix("ms")) / 1000.0 / max(feed.clock.rate, 1e-9),
        )
        self.reconciler = KlineReconciler(feed, sink, self.db, self.model, ws.reconciliation.mismatch_tolerance,
                                          started_ms=lambda: self.started_ms)
        self.alerts = AlertMonitor(config.alerts, feed.events, grace_s=ws.heartbeat.timeout)
        self.monitor = QualityMonitor(feed, self.model, self.gaps.book, self.alerts, self.db,
                                      started_ms=lambda: self.started_ms)
        self.drain = TableDrain(self.db, feed.events, feed.ledger)
        self.archive_fill = ArchiveFill(self.gaps.book, data_dir, config.storage, jobs.archive_url, feed.clock.now_ms)
        self._opened = False
        self.quarantined: list[str] = []  # files this run moved to quarantine/

    def attach(self) -> None:
        """Register the feed hooks (before ``Feed.start``, so no gap is missed)."""
        self.feed.on_gap(self.gaps.on_gap)
        self.feed.on_gap_filled(self.gaps.on_filled)

    async def open(self) -> None:
        await asyncio.to_thread(self.db.open)
        self._opened = True
        await self.gaps.load()

    async def start(self, scheduler: JobScheduler, restart: RestartState | None) -> None:
        """Record the restart gaps and schedule the jobs (call right after ``Feed.start``)."""
        now = self.feed.clock.now_ms()
        self.started_ms = now
        if restart is not None and now is not None:
            # Before any live bar can arrive: no gap record reaches past the first one.
            opened = await self.gaps.record_restart(restart, list(self.feed.state.klines), now)
            if opened:
                log.info("%d series have bars missing since the last run", opened)
        ws, jobs = self.config.websocket, self.config.jobs
        rec = ws.reconciliation
        scheduler.add("heartbeat", self.heartbeat, ws.heartbeat.check_interval)
        scheduler.add("dataqual", self.monitor.record, jobs.dataqual_interval)
        scheduler.add("reconcile_klines", self.reconciler.run_klines, rec.kline_interval)
        if not self.config.modes.rest_klines_allowed and ws.streams.aggtrade:
            scheduler.add("reconcile_trades", self.reconciler.run_trades, rec.aggtrade_interval)
        if ws.streams.depth:
            scheduler.add("depth_check", self.depth.check, rec.depth_interval)
        scheduler.add("gap_check", self.gaps.check, jobs.gap_check_interval)
        scheduler.add("publish", self.drain.drain, jobs.publish_interval)
        if jobs.archive_fill and not self.config.modes.rest_klines_allowed:
            scheduler.add("archive_fill", self.archive_fill.run, jobs.archive_fill_interval,
                          first_after_s=min(FIRST_RUN_AFTER_S, jobs.archive_fill_interval))

    async def on_quarantined(self, records: Sequence[dict]) -> None:
        """Damaged files were moved to ``quarantine/``: an alert, and gaps for the bars only they held."""
        if not records:
            return
        now = self.feed.clock.now_ms() or int(time.time() * 1000)
        self.quarantined.extend(str(r.get("file")) for r in records)
        names = self.quarantined
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        self.alerts.book.update("quarantine", {None: f"{len(names)} damaged file(s) moved to quarantine/: {shown}"},
                                now)
        opened = await self.gaps.record_lost(records, self.feed.symbols, now, "quarantine")
        log.warning("%d damaged file(s) quarantined; %d gap(s) recorded for the bars only they held",
                    len(records), len(opened))
        self._refill(opened, "quarantine")

    async def on_wal_corrupt(self, records: Sequence[dict]) -> None:
        """Corrupt WAL spans were set aside (call after the replayed bars were flushed): gaps for
        the bars lost there, which lower DataQual until the usual paths refill them."""
        if not records:
            return
        now = self.feed.clock.now_ms() or int(time.time() * 1000)
        opened = await self.gaps.record_lost(records, self.feed.symbols, now, "wal_corrupt")
        log.warning("corrupt WAL records set aside in %s; %d gap(s) recorded for the bars lost",
                    ", ".join(sorted({str(r["file"]) for r in records})), len(opened))
        self._refill(opened, "wal_corrupt")

    def _refill(self, holes: Sequence[tuple[str, str, int, int]], reason: str) -> None:
        """Fallback mode: the REST back-fill fetches lost bars like any other gap's (those
        inside the rings' span; older ones wait for an import). WebSocket-only: the records
        stay open until an archive import or a later gap check finds the bars stored."""
        if self.feed.backfill is None:
            return
        for symbol, interval, first, last in holes:
            self.feed.backfill.request(Gap(symbol, interval, first, last, reason))

    async def heartbeat(self) -> None:
        """Resyncs since the last look become events, then every symbol is scored and the alerts evaluated."""
        await self.depth.observe()
        await self.monitor.heartbeat()

    async def finish(self) -> None:
        """At shutdown (feed and storage closed): the last gap check, DataQual record and publish."""
        if not self._opened:
            return
        steps = (("gap check", self.gaps.check), ("heartbeat", self.heartbeat),
                 ("DataQual record", self.monitor.record), ("publish", self.drain.drain))
        for name, step in steps:
            try:
                await step()
            except Exception:  # noqa: BLE001 - each last step is worth trying; none may stop the shutdown
                log.exception("final %s failed", name)
        await asyncio.to_thread(self.db.close)
        self._opened = False

    def status(self) -> dict[str, Any]:
        """status.json additions: ``dataqual``, ``alerts``, ``reconciliation``, ``gaps``, ``tables``."""
        return {
            "dataqual": self.monitor.status(),
            "alerts": self.alerts.to_list(),
            "reconciliation": {**self.reconciler.status(), "depth": self.depth.status()},
            "gaps": self.gaps.status(),
            "archive_fill": self.archive_fill.status(),
            "tables": {"database": str(self.db.path), "published": str(self.db.data_dir / "tables"),
                       **{k: v for k, v in self.drain.status().items() if k != "last_publish_ms"},
                       "last_publish": iso(self.drain.last_publish_ms)},
        }
