"""The klinestore service: live ingest into memory and storage, with a health snapshot on disk.

Lifecycle, in this order and nothing hidden:

1. ``start()``: open storage (``BarStore.open``: the shard's lock, interrupted publishes
   finished, the WAL replayed), fill the ring buffers from disk (warm restart:
   ``load_recent``, so a restart does not warm up for an hour), open the DataQual database,
   start live ingest, record the bars missing since the last run, then start the scheduled
   jobs (``JobScheduler``, APScheduler): the service's own (Parquet ``flush`` every
   ``storage.flush_interval`` and ``compaction`` every ``storage.compaction_interval``, both
   in a thread; ``status`` every ``jobs.status_interval``; ``listings`` every
   ``jobs.listing_refresh_interval``) and the data-quality jobs of ``QualityJobs``; and,
   when ``metrics.enabled``, the Prometheus endpoint on loopback (each scrape builds the
   same snapshot as status.json, on the event loop, so the two never disagree); when
   ``gateway.enabled``, the local Binance-compatible API (``klinestore.gateway``, right after
   ingest starts, so it serves live state from its first request).
2. ``wait()``: run until ``request_stop()`` (SIGINT/SIGTERM in the CLI) or a duration.
3. ``stop()``: stop the metrics endpoint and the scheduler (running jobs finish), stop ingest (connections closed,
   queued callbacks run), close storage (a last flush, the lock released), then a last gap
   check, DataQual record and publish of the tables, and status.json one last time. Safe
   to call twice.

``run()`` does all three. Every closed bar is in the WAL (``BarStore.append``, called by the
dispatcher on the event loop) before a ring buffer or a callback sees it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from klinestore.config import Config
from klinestore.core.times import iso
from klinestore.gateway import Gateway
from klinestore.ingest.feed import Feed
from klinestore.ingest.sink import BarSink
from klinestore.ingest.status import snapshot
from klinestore.jobs.quality import QualityJobs
from klinestore.jobs.scheduler import JobScheduler
from klinestore.jobs.series_fill import SeriesFill
from klinestore.jobs.trade_repair import TradeRepair
from klinestore.queries.metrics import start_metrics_server
from klinestore.storage import BarStore, RestartState, SeriesStores, prepare_dirs, shard_file
from klinestore.storage.status import STATUS_FILE, write_status

log = logging.getLogger(__name__)


class Service:
    """One ingest process (one shard) over ``config``; storage is a ``BarStore`` unless ``sink`` is given."""

    def __init__(
        self,
        config: Config,
        *,
        sink: BarSink | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        connect_fn: Callable[..., Any] | None = None,
    ) -> None:
        self.config = config
        self.data_dir = Path(config.storage.data_dir)
        self.status_path = self.data_dir / shard_file(STATUS_FILE, config.sharding.shard_id, config.sharding.num_shards)
        self.store: BarStore | None = None
        self.series: SeriesStores | None = None  # mark/index bars and funding, beside the klines
        if sink is None:
            self.store = BarStore(self.data_dir, config.storage, shard_id=config.sharding.shard_id)
            self.series = SeriesStores(self.data_dir, config.storage, shard_id=config.sharding.shard_id)
            sink = self.store
        self.sink: BarSink = sink
        extra: dict[str, Any] = {} if connect_fn is None else {"connect_fn": connect_fn}
        if self.series is not None:
            extra["series_sinks"] = self.series.sinks
        self.feed = Feed(config, self.sink, transport=transport, **extra)
        self.scheduler = JobScheduler()
        self.series_fill: SeriesFill | None = None
        self.trade_repair: TradeRepair | None = None  # WebSocket-only: 1m gaps rebuilt from stored aggTrades
        if self.feed.series is not None and config.modes.rest_klines_allowed:
            self.series_fill = SeriesFill(self.feed.rest, self.feed.series, self.data_dir, self.feed.clock,
                                          lambda: sorted(self.feed.symbols))
        elif self.series is not None and self.series.trades is not None:
            self.trade_repair = TradeRepair(self.feed, self.series.trades)
            self.feed.on_gap(self.trade_repair.on_gap)
        self.quality = QualityJobs(config, self.feed, self.sink, self.data_dir)
        self.restart: RestartState | None = None
        self.warm_bars = 0  # bars loaded into the ring buffers from disk at start
        self.status_writes = 0
        self.flushes = 0
        self.flush_failures = 0
        self.flushed_bars = 0
        self.last_flush_ms: int | None = None  # wall clock of the last successful flush
        self.last_flush_error = ""
        self.compactions = 0
        self._status_lock = asyncio.Lock()
        self._stop_requested: asyncio.Event | None = None
        self._started = False
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.metrics_url = ""  # http://127.0.0.1:PORT/metrics while the endpoint runs
        self._stop_metrics: Callable[[], None] | None = None
        self.gateway: Gateway | None = None
        if config.gateway.enabled:
            self.gateway = Gateway(config.gateway, self.feed, self.data_dir)

    async def start(self) -> None:
        self._stop_requested = asyncio.Event()
        prepare_dirs(self.data_dir)
        if self.store is not None:
            self.restart = await asyncio.to_thread(self.store.open)
            if self.series is not None:
                await asyncio.to_thread(self.series.open)
                if self.gateway is not None and self.series.pending_rows:  # the gateway reads the
                    await asyncio.to_thread(self.series.flush)  # series from Parquet: the WAL's rows first
            await self._warm_restart(self.store)
        self._started = True
        await self.quality.open()
        self.quality.attach()
        await self.feed.start()
        if self.gateway is not None:
            await self.gateway.start()
        await self.quality.start(self.scheduler, self.restart)
        if self.restart is not None and (self.restart.quarantined or self.restart.wal_corrupt):
            await self.flush()  # the replayed bars first, so that only the lost ones count as gaps
            await self.quality.on_quarantined(self.restart.quarantined)
            await self.quality.on_wal_corrupt(self.restart.wal_corrupt)
        self._schedule()
        self.scheduler.start()
        if self.config.metrics.enabled:
            self._loop = asyncio.get_running_loop()
            host, port, self._stop_metrics = await asyncio.to_thread(
                start_metrics_server, self.config.metrics, self._scrape)
            self.metrics_url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/metrics"
        log.info("klinestore running: %s mode, %d symbols, data in %s", self.config.modes.name,
                 len(self.feed.symbols), self.data_dir)

    def _schedule(self) -> None:
        """The service's own jobs (the data-quality ones are ``QualityJobs``')."""
        jobs, storage = self.config.jobs, self.config.storage
        self.scheduler.add("status", self.write_status, jobs.status_interval, first_after_s=0)
        self.scheduler.add("listings", self.refresh_listings, jobs.listing_refresh_interval)
        if self.series_fill is not None:  # fallback mode: what the markPrice stream missed, from REST
            self.scheduler.add("series_fill", self.series_fill.run, storage.flush_interval, first_after_s=0)
        if self.trade_repair is not None:
            self.scheduler.add("trade_repair", self.trade_repair.run, storage.flush_interval)
        if self.store is not None:
            self.scheduler.add("flush", self.flush, storage.flush_interval)
            self.scheduler.add("compaction", self.compact, storage.compaction_interval)

    def request_stop(self) -> None:
        """Ask ``wait()`` to return (signal handlers call this; thread-unsafe: call on the loop)."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def wait(self, duration: float | None = None) -> None:
        """Until ``request_stop()`` or ``duration`` seconds."""
        assert self._stop_requested is not None, "start() first"
        try:
            await asyncio.wait_for(self._stop_requested.wait(), duration)
        except TimeoutError:
            pass

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._stop_metrics is not None:
            await asyncio.to_thread(self._stop_metrics)
            self._stop_metrics = None
            self.metrics_url = ""
        await self.scheduler.shutdown()
        if self.gateway is not None:
            await self.gateway.stop()
        if self._started:
            await self.feed.stop()
        if self.store is not None and self._started:
            try:
                await asyncio.to_thread(self.store.close)  # the last flush, then the lock goes
                if self.series is not None:
                    await asyncio.to_thread(self.series.close)  # (a failure above leaves them in their WAL too)
                self.flushes += 1
                self.last_flush_ms = int(time.time() * 1000)
            except Exception as exc:  # noqa: BLE001 - reported; the WAL still holds every bar
                self.flush_failures += 1
                self.last_flush_error = repr(exc)
                log.exception("closing storage failed (bars stay in the WAL)")
        if self._started:  # a service that never started (storage held elsewhere) leaves status.json alone
            await self.quality.finish()
            await self.write_status()
        await self.feed.rest.aclose()
        log.info("klinestore stopped")

    async def run(self, duration: float | None = None) -> None:
        try:
            await self.start()
            await self.wait(duration)
        finally:
            await self.stop()

    def status(self) -> dict[str, Any]:
        data = snapshot(self.feed)
        data["data_dir"] = str(self.data_dir)
        data["pid"], data["host"] = os.getpid(), socket.gethostname()  # status tells a killed service from a live one
        storage: dict[str, Any] = {
            "sink": type(self.sink).__name__, "flushes": self.flushes, "flush_failures": self.flush_failures,
            "flushed_bars": self.flushed_bars, "last_flush": iso(self.last_flush_ms),
            "last_flush_error": self.last_flush_error, "warm_restart_bars": self.warm_bars,
            "compactions": self.compactions,
        }
        if self.store is not None:
            storage["pending_bars"] = self.store.pending_bars
        if self.series is not None:  # mark/index bars, funding events, aggTrades in their WALs, not yet in Parquet
            storage["series_pending_rows"] = self.series.pending_rows
        if self.restart is not None:
            r = self.restart
            storage["restart"] = {"replayed_bars": r.replayed_bars, "wal_segments": r.wal_segments,
                                  "torn_bytes": r.torn_bytes, "corrupt_records": r.corrupt_records,
                                  "recovered_publishes": r.recovered_publishes}
        data["storage"] = storage
        data["last_flush"] = iso(self.last_flush_ms)
        data["wal"] = self._wal_status()
        data["status_interval_s"] = self.config.jobs.status_interval
        data["metrics"] = self.metrics_url
        data["gateway"] = self.gateway.status() if self.gateway is not None else {"rest": "", "ws": ""}
        if self.trade_repair is not None:
            data["trade_repair"] = self.trade_repair.status()
        data["jobs"] = self.scheduler.snapshot()
        data.update(self.quality.status())
        return data

    def _scrape(self) -> dict[str, Any]:
        """The snapshot for a metrics scrape (called in the HTTP server's thread; built on the loop,
        which owns every counter, so no dict is read while it changes)."""
        assert self._loop is not None

        async def build() -> dict[str, Any]:
            return self.status()

        return asyncio.run_coroutine_threadsafe(build(), self._loop).result(timeout=10)

    def _wal_status(self) -> dict[str, Any]:
        """Bars in the WAL not yet in Parquet, and the WAL's segments and bytes on disk."""
        if self.store is None:
            return {}
        segments = self.store.wal_segments()
        sizes = []
        for path in segments:
            try:
                sizes.append(path.stat().st_size)
            except FileNotFoundError:  # a flush deleted it meanwhile
                continue
        return {"pending_bars": self.store.pending_bars, "segments": len(sizes), "bytes": sum(sizes)}

    async def write_status(self) -> None:
        """status.json now (the status job's work; one write at a time, they share a temporary file)."""
        async with self._status_lock:
            data = self.status()
            await asyncio.to_thread(write_status, self.status_path, data)
            self.status_writes += 1

    async def flush(self) -> None:
        """Publish the pending bars as Parquet now (in a thread; the WAL already holds them).

        A failure is counted and shown in status.json (``storage.last_flush_error``), then
        raised for the scheduler to count; the bars stay pending and in the WAL for the next flush.
        """
        if self.store is None:
            return
        recent = self.feed.series.recent if self.feed.series is not None else None
        checkpoint = recent.checkpoint() if recent is not None else 0
        try:
            report = await asyncio.to_thread(self.store.flush)
            if self.series is not None:
                await asyncio.to_thread(self.series.flush)
        except Exception as exc:
            self.flush_failures += 1
            self.last_flush_error = repr(exc)
            raise
        if recent is not None:  # the series rows numbered up to the checkpoint are in Parquet now
            recent.trim(checkpoint)
        self.flushes += 1
        self.flushed_bars += report.bars
        self.last_flush_ms = int(time.time() * 1000)

    async def compact(self) -> None:
        """Merge this shard's Parquet files (in a thread): the file count stays bounded."""
        if self.store is None:
            return
        report = await asyncio.to_thread(self.store.compact)
        self.compactions += 1
        await self.quality.on_quarantined(report.quarantined)
        if self.series is not None:
            await self.quality.on_quarantined(await asyncio.to_thread(self.series.compact))
        if report.merged_files or report.deleted_files:
            log.info("compaction: %d files merged into %d, %d retired files deleted", report.merged_files,
                     report.written_files, report.deleted_files)

    async def refresh_listings(self) -> None:
        """New listings and delistings (exchangeInfo, weight 1); a failure is the job's, the next one retries."""
        await self.feed.refresh_listings()

    async def _warm_restart(self, store: BarStore) -> None:
        """Ring buffers from Parquet + WAL: as many bars as each buffer holds."""
        cache = self.config.websocket.cache
        sizes = {i: cache.kline_1m_history if i == "1m" else cache.kline_max_size
                 for i in self.config.websocket.streams.kline_intervals}
        started = time.perf_counter()
        frames = await asyncio.to_thread(store.load_recent, sorted(self.feed.symbols), sizes)
        self.warm_bars = self.feed.load_history_frames(frames)
        log.info("warm restart: %d bars from disk in %.2fs", self.warm_bars, time.perf_counter() - started)
