"""The klinestore service: live ingest into memory and storage, with a health snapshot on disk.

Lifecycle, in this order and nothing hidden:

1. ``start()``: open storage (``BarStore.open``: the shard's lock, interrupted publishes
   finished, the WAL replayed), fill the ring buffers from disk (warm restart:
   ``load_recent``, so a restart does not warm up for an hour), start live ingest, start
   the periodic work: Parquet flush every ``storage.flush_interval`` (in a thread),
   status.json every ``jobs.status_interval``, listing refresh every
   ``jobs.listing_refresh_interval``. The jobs engineer adds the scheduler here.
2. ``wait()``: run until ``request_stop()`` (SIGINT/SIGTERM in the CLI) or a duration.
3. ``stop()``: stop ingest (connections closed, queued callbacks run), close storage (a last
   flush, the lock released), write status.json one last time. Safe to call twice.

``run()`` does all three. Every closed bar is in the WAL (``BarStore.append``, called by the
dispatcher on the event loop) before a ring buffer or a callback sees it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ingest.errors import IngestError
from ingest.feed import Feed
from ingest.sink import BarSink
from ingest.status import STATUS_FILE, iso, snapshot, write_status
from klinestore.config import Config
from storage import BarStore, RestartState
from storage.layout import shard_file

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
        if sink is None:
            self.store = BarStore(self.data_dir, config.storage, shard_id=config.sharding.shard_id)
            sink = self.store
        self.sink: BarSink = sink
        extra: dict[str, Any] = {} if connect_fn is None else {"connect_fn": connect_fn}
        self.feed = Feed(config, self.sink, transport=transport, **extra)
        self.restart: RestartState | None = None
        self.warm_bars = 0  # bars loaded into the ring buffers from disk at start
        self.status_writes = 0
        self.flushes = 0
        self.flush_failures = 0
        self.flushed_bars = 0
        self.last_flush_ms: int | None = None  # wall clock of the last successful flush
        self.last_flush_error = ""
        self._stop_requested: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._stopped = False

    async def start(self) -> None:
        self._stop_requested = asyncio.Event()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.store is not None:
            self.restart = await asyncio.to_thread(self.store.open)
            await self._warm_restart(self.store)
        self._started = True
        await self.feed.start()
        self._tasks.append(asyncio.create_task(self._status_loop(), name="service:status"))
        self._tasks.append(asyncio.create_task(self._listings_loop(), name="service:listings"))
        if self.store is not None:
            self._tasks.append(asyncio.create_task(self._flush_loop(), name="service:flush"))
        log.info("klinestore running: %s mode, %d symbols, data in %s", self.config.modes.name,
                 len(self.feed.symbols), self.data_dir)

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
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._started:
            await self.feed.stop()
        if self.store is not None and self._started:
            try:
                await asyncio.to_thread(self.store.close)  # the last flush, then the lock goes
                self.last_flush_ms = int(time.time() * 1000)
            except Exception as exc:  # noqa: BLE001 - reported; the WAL still holds every bar
                self.flush_failures += 1
                self.last_flush_error = repr(exc)
                log.exception("closing storage failed (bars stay in the WAL)")
        if self._started:  # a service that never started (storage held elsewhere) leaves status.json alone
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
        storage: dict[str, Any] = {
            "sink": type(self.sink).__name__, "flushes": self.flushes, "flush_failures": self.flush_failures,
            "flushed_bars": self.flushed_bars, "last_flush": iso(self.last_flush_ms),
            "last_flush_error": self.last_flush_error, "warm_restart_bars": self.warm_bars,
        }
        if self.store is not None:
            storage["pending_bars"] = self.store.pending_bars
        if self.restart is not None:
            r = self.restart
            storage["restart"] = {"replayed_bars": r.replayed_bars, "wal_segments": r.wal_segments,
                                  "torn_bytes": r.torn_bytes, "corrupt_records": r.corrupt_records,
                                  "recovered_publishes": r.recovered_publishes}
        data["storage"] = storage
        data["status_interval_s"] = self.config.jobs.status_interval
        return data

    async def write_status(self) -> None:
        data = self.status()
        await asyncio.to_thread(write_status, self.status_path, data)
        self.status_writes += 1

    async def flush(self) -> None:
        """Publish the pending bars as Parquet now (in a thread; the WAL already holds them)."""
        if self.store is None:
            return
        try:
            report = await asyncio.to_thread(self.store.flush)
        except Exception as exc:  # noqa: BLE001 - the bars stay pending and in the WAL; the next flush retries
            self.flush_failures += 1
            self.last_flush_error = repr(exc)
            log.exception("flush failed; bars stay in the WAL")
            return
        self.flushes += 1
        self.flushed_bars += report.bars
        self.last_flush_ms = int(time.time() * 1000)

    async def _warm_restart(self, store: BarStore) -> None:
        """Ring buffers from Parquet + WAL: as many bars as each buffer holds."""
        cache = self.config.websocket.cache
        sizes = {i: cache.kline_1m_history if i == "1m" else cache.kline_max_size
                 for i in self.config.websocket.streams.kline_intervals}
        started = time.perf_counter()
        frames = await asyncio.to_thread(store.load_recent, sorted(self.feed.symbols), sizes)
        self.warm_bars = self.feed.load_history_frames(frames)
        log.info("warm restart: %d bars from disk in %.2fs", self.warm_bars, time.perf_counter() - started)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.storage.flush_interval)
            await self.flush()

    async def _status_loop(self) -> None:
        while True:
            try:
                await self.write_status()
            except Exception:  # noqa: BLE001 - a full disk must not stop ingest
                log.exception("status.json not written")
            await asyncio.sleep(self.config.jobs.status_interval)

    async def _listings_loop(self) -> None:
        """New listings and delistings every ``jobs.listing_refresh_interval`` (exchangeInfo, weight 1)."""
        while True:
            await asyncio.sleep(self.config.jobs.listing_refresh_interval)
            try:
                await self.feed.refresh_listings()
            except IngestError as exc:
                log.warning("listing refresh failed: %s", exc)
            except Exception:  # noqa: BLE001 - the next refresh may work; the service goes on
                log.exception("listing refresh failed")
