"""APScheduler 3 (asyncio) with the guarantees the service needs.

* A job never overlaps itself (``max_instances=1``); a run that would overlap is skipped and
  counted, and missed runs coalesce into one.
* A failing job is logged and counted; it never stops the scheduler or the service.
* Blocking work (Parquet flushes, DuckDB writes) is the job's business: jobs are coroutines
  that push such work to a thread, so the event loop that reads the exchange never blocks.
* Every job's runs, failures, skips and last duration are visible (status.json, metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

JobFunc = Callable[[], Awaitable[Any]]


@dataclass(slots=True)
class JobStats:
    every_s: float
    runs: int = 0
    failures: int = 0
    skipped: int = 0
    last_error: str = ""
    last_duration_s: float = 0.0
    running: bool = False


class JobScheduler:
    """Named periodic coroutine jobs on the running event loop."""

    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=timezone.utc)
        self._scheduler.add_listener(self._on_skip, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._funcs: dict[str, JobFunc] = {}
        self.stats: dict[str, JobStats] = {}

    def add(self, name: str, func: JobFunc, every_s: float, *, first_after_s: float | None = None) -> None:
        """Run ``func`` every ``every_s`` seconds; the first run after ``first_after_s`` (default: one period)."""
        if name in self._funcs:
            raise ValueError(f"job {name!r} already scheduled")
        if every_s <= 0:
            raise ValueError(f"job {name!r}: every_s must be > 0")
        self._funcs[name] = func
        self.stats[name] = JobStats(every_s=every_s)
        delay = every_s if first_after_s is None else first_after_s
        self._scheduler.add_job(
            self._run,
            "interval",
            args=[name],
            id=name,
            name=name,
            seconds=every_s,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(timezone.utc) + timedelta(seconds=delay),
        )

    def start(self) -> None:
        self._scheduler.start()

    async def shutdown(self) -> None:
        """Stop scheduling; let running jobs finish (they are awaited by their own tasks)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        while any(s.running for s in self.stats.values()):
            await asyncio.sleep(0.01)

    async def run_now(self, name: str) -> bool:
        """Run a job once, now, unless it is already running (e.g. the final flush at shutdown)."""
        if self.stats[name].running:
            return False
        await self._run(name)
        return True

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(stats) for name, stats in self.stats.items()}

    async def _run(self, name: str) -> None:
        stats = self.stats[name]
        if stats.running:  # run_now racing the schedule: never overlap
            stats.skipped += 1
            return
        stats.running = True
        started = time.monotonic()
        try:
            await self._funcs[name]()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing job must never stop the service
            stats.failures += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("job %s failed: %s", name, stats.last_error, exc_info=log.isEnabledFor(logging.DEBUG))
        finally:
            stats.runs += 1
            stats.last_duration_s = time.monotonic() - started
            stats.running = False

    def _on_skip(self, event: JobEvent) -> None:
        stats = self.stats.get(event.job_id)
        if stats is not None:
            stats.skipped += 1
