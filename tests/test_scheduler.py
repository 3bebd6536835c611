"""Job scheduler: periodic, never overlapping, failures counted and never fatal."""

from __future__ import annotations

import asyncio

import pytest

from klinestore.jobs.scheduler import JobScheduler


def test_jobs_run_periodically_and_failures_do_not_stop_others() -> None:
    async def main() -> JobScheduler:
        sched = JobScheduler()
        ticks: list[str] = []

        async def good() -> None:
            ticks.append("good")

        async def bad() -> None:
            raise RuntimeError("boom")

        sched.add("good", good, 0.05, first_after_s=0)
        sched.add("bad", bad, 0.05, first_after_s=0)
        sched.start()
        await asyncio.sleep(0.5)
        await sched.shutdown()
        assert len(ticks) >= 4
        return sched

    sched = asyncio.run(main())
    assert sched.stats["bad"].failures >= 4
    assert "RuntimeError: boom" in sched.stats["bad"].last_error
    assert sched.stats["good"].failures == 0


def test_a_slow_job_never_overlaps_itself() -> None:
    async def main() -> tuple[int, JobScheduler]:
        sched = JobScheduler()
        running = 0
        peak = 0

        async def slow() -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.2)
            running -= 1

        sched.add("slow", slow, 0.03, first_after_s=0)
        sched.start()
        await asyncio.sleep(0.3)
        await asyncio.sleep(0.3)
        await sched.shutdown()
        return peak, sched

    peak, sched = asyncio.run(main())
    assert peak == 1
    assert sched.stats["slow"].skipped > 0


def test_run_now_and_snapshot() -> None:
    async def main() -> JobScheduler:
        sched = JobScheduler()
        calls = []

        async def job() -> None:
            calls.append(1)

        sched.add("flush", job, 3600)
        sched.start()
        await sched.run_now("flush")
        await sched.shutdown()
        assert calls == [1]
        return sched

    snap = asyncio.run(main()).snapshot()
    assert snap["flush"]["runs"] == 1 and snap["flush"]["every_s"] == 3600


def test_bad_schedules_are_refused() -> None:
    sched = JobScheduler()

    async def job() -> None:
        pass

    with pytest.raises(ValueError):
        sched.add("x", job, 0)
    sched.add("y", job, 1)
    with pytest.raises(ValueError):
        sched.add("y", job, 1)


def test_run_now_waits_for_a_running_run_then_runs_again() -> None:
    async def main() -> list[str]:
        sched = JobScheduler()
        log: list[str] = []

        async def job() -> None:
            log.append("start")
            await asyncio.sleep(0.1)
            log.append("end")

        sched.add("job", job, 3600, first_after_s=0)
        sched.start()
        await asyncio.sleep(0.03)  # the scheduled run is under way
        await sched.run_now("job")
        await sched.shutdown()
        return log

    assert asyncio.run(main()) == ["start", "end", "start", "end"]


def test_shutdown_lets_a_running_job_finish_and_cancels_a_stuck_one() -> None:
    async def main() -> tuple[list[str], JobScheduler]:
        sched = JobScheduler()
        log: list[str] = []

        async def short() -> None:
            await asyncio.sleep(0.1)
            log.append("short done")

        async def stuck() -> None:
            await asyncio.sleep(3600)

        sched.add("short", short, 3600, first_after_s=0)
        sched.add("stuck", stuck, 3600, first_after_s=0)
        sched.start()
        await asyncio.sleep(0.03)
        await sched.shutdown(timeout=0.3)
        return log, sched

    log, sched = asyncio.run(main())
    assert log == ["short done"]
    assert sched.stats["short"].failures == 0
    assert sched.stats["stuck"].last_error == "cancelled" and not sched.stats["stuck"].running
