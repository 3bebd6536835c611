"""The klinestore service: live ingest into memory and storage, with a health snapshot on disk.

Lifecycle, in this order and nothing hidden:

1. ``start()``: open the sink (storage), fill the ring buffers from disk (warm restart), start
   live ingest, start the periodic work (status.json every ``jobs.status_interval``, listing
   refresh every ``jobs.listing_refresh_interval``; the jobs engineer adds the scheduler here).
2. ``wait()``: run until ``request_stop()`` (SIGINT/SIGTERM in the CLI) or a duration.
3. ``stop()``: stop ingest (connections closed, queued callbacks run), flush the sink, write
   status.json one last time. Safe to call twice.

``run()`` does all three.
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
from ingest.sink import BarSink, MemorySink
from ingest.status import STATUS_FILE, snapshot, write_status
from klinestore.config import Config

log = logging.getLogger(__name__)


class Service:
    """One ingest process (one shard) over ``config``."""

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
        self.status_path = self.data_dir / STATUS_FILE
        self.sink: BarSink = sink if sink is not None else MemorySink()
        extra: dict[str, Any] = {} if connect_fn is None else {"connect_fn": connect_fn}
        self.feed = Feed(config, self.sink, transport=transport, **extra)
        self.started_at: float | None = None
        self.status_writes = 0
        self.last_flush: float | None = None  # wall-clock seconds of the last sink flush
        self._stop_requested: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    async def start(self) -> None:
        self._stop_requested = asyncio.Event()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = time.monotonic()
        await self.feed.start()
        self._tasks.append(asyncio.create_task(self._status_loop(), name="service:status"))
        self._tasks.append(asyncio.create_task(self._listings_loop(), name="service:listings"))
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
        await self.feed.stop()
        await self._flush()
        await self.write_status()
        log.info("klinestore stopped")

    async def run(self, duration: float | None = None) -> None:
        await self.start()
        try:
            await self.wait(duration)
        finally:
            await self.stop()

    def status(self) -> dict[str, Any]:
        data = snapshot(self.feed)
        data["data_dir"] = str(self.data_dir)
        data["storage"] = {
            "sink": type(self.sink).__name__,
            "last_flush": None if self.last_flush is None else round(self.last_flush, 3),
        }
        data["status_interval_s"] = self.config.jobs.status_interval
        return data

    async def write_status(self) -> None:
        data = self.status()
        await asyncio.to_thread(write_status, self.status_path, data)
        self.status_writes += 1

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

    async def _flush(self) -> None:
        flush = getattr(self.sink, "flush", None)
        if flush is None:
            return
        try:
            await asyncio.to_thread(flush)
            self.last_flush = time.time()
        except Exception:  # noqa: BLE001 - reported; the WAL still holds the bars
            log.exception("flush at shutdown failed")
