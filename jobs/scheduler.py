"""APScheduler 3 (asyncio) with the guarantees the service needs.

* A job never overlaps itself (``max_instances=1``); a run that would overlap is skipped and
  counted, and missed runs coalesce into one.
* A failing job is logged and counted; it never stops the scheduler or the service.
* Blocking work (Parquet flushes, DuckDB writes) is the job's business: jobs are coroutines
  that push such work to a thread, so the event loop that reads the exchange never blocks.
* Every job's runs, failures, skips and durations are visible (status.json, metrics).
* Shutdown waits for running jobs, a bounded time: a job stuck on the network is cancelled.
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
from apscheduler.schedulers.base import STATE_RUNNING, STATE_STOPPED

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
    max_duration_s: float = 0.0
    last_run: str | None = None  # when the last run ended (UTC, ISO 8601)
    running: bool = False


class JobScheduler:
    """Named periodic coroutine jobs on the running event loop."""

    def __init__(self) -> None:
        # APScheduler logs every run (INFO) and every skipped run (WARNING); ``stats`` counts both.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        self._scheduler = AsyncIOScheduler(timezone=timezone.utc)
        self._scheduler.add_listener(self._on_skip, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._funcs: dict[str, JobFunc] = {}
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._stopping = False
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

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop scheduling; let running jobs finish, cancelling those still running after ``timeout``.

        APScheduler's own shutdown cancels running coroutine jobs, so it is paused first and
        shut down only once the running jobs are done.
        """
        self._stopping = True
        if self._scheduler.state == STATE_RUNNING:
            self._scheduler.pause()
        deadline = time.monotonic() + timeout
        while any(s.running for s in self.stats.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stuck = {name: task for name, task in self._running.items() if not task.done()}
        for name, task in stuck.items():
            log.warning("job %s still running %.0fs after shutdown began: cancelled", name, timeout)
            task.cancel()
        await asyncio.gather(*stuck.values(), return_exceptions=True)
        if self._scheduler.state != STATE_STOPPED:
            self._scheduler.shutdown(wait=False)

    async def run_now(self, name: str) -> None:
        """Run a job once, now, in its own task like a scheduled run; if it is running, after that run."""
        while not await asyncio.create_task(self._run(name), name=f"job:{name}"):
            await asyncio.sleep(0.005)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(stats) for name, stats in self.stats.items()}

    async def _run(self, name: str) -> bool:
        """One run of a job; False if it was already running (it never overlaps itself)."""
        stats = self.stats[name]
        if stats.running:
            stats.skipped += 1
            return False
        stats.running = True
        task = asyncio.current_task()
        if task is not None:
            self._running[name] = task
        started = time.monotonic()
        try:
            await self._funcs[name]()
        except asyncio.CancelledError:
            stats.failures += 1
            stats.last_error = "cancelled"
            if not self._stopping:
                raise
            # cancelled by shutdown (stuck past its timeout): ends here, counted, not reported twice
        except Exception as exc:  # a failing job must never stop the service
            stats.failures += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("job %s failed: %s", name, stats.last_error, exc_info=log.isEnabledFor(logging.DEBUG))
        finally:
            stats.runs += 1
            stats.last_duration_s = round(time.monotonic() - started, 6)
            stats.max_duration_s = max(stats.max_duration_s, stats.last_duration_s)
            stats.last_run = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            stats.running = False
            self._running.pop(name, None)
        return True

    def _on_skip(self, event: JobEvent) -> None:
        stats = self.stats.get(event.job_id)
        if stats is not None:
            stats.skipped += 1
