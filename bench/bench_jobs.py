"""Scheduled jobs: how long each run takes at 2 and at 200 symbols, and what it costs the event loop.

The service (WebSocket-only, 1m/5m/15m/1h/4h + aggTrade + depth + markPrice per symbol) runs
against the simulator in a separate process at 3x with kline pushes every 750 ms of exchange
time (4 per real second, as Binance; 200 symbols make ~4k frames/s), every job on a short
period so each runs many times. Each job's mean duration at 200 symbols stands beside the same job at 2
symbols; the notes hold the maxima and the event loop's worst lag (jobs must not block it).
The REST-spending jobs (the depth check; the fallback mode's REST reconciliation, one request
per symbol and interval) are timed alone, with how long their requests waited for the weight
budget (``budget_wait_s_summed``, summed over the requests in flight).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_ingest import simulator, symbols_named
from bench.harness import Figure
from klinestore.config import Config
from klinestore.service import Service

PERIODS = {
    "websocket.heartbeat.check_interval": 0.5, "jobs.dataqual_interval": 1.0, "jobs.publish_interval": 1.0,
    "jobs.gap_check_interval": 1.0, "jobs.status_interval": 1.0, "storage.flush_interval": 1.0,
    "websocket.reconciliation.kline_interval": 2.0, "websocket.reconciliation.aggtrade_interval": 1.0,
    "websocket.reconciliation.depth_interval": 2.0,
    "websocket.connection_pool.max_streams_per_connection": 400,  # 200 symbols x 8 streams in 5 connections
}
FALLBACK = {"modes.websocket_only_klines": False, "modes.disable_rest_fallback": False,
            "websocket.cache.kline_1m_history": 10, "websocket.cache.kline_max_size": 5}


def measure_jobs(n_symbols: int, seconds: float, *, jobs: bool = True, timed: tuple[str, ...] = (),
                 runs: int = 3, **changes: Any) -> dict[str, Any]:
    """Run the service ``seconds`` against the simulator; durations of every job run, loop lag, checks.

    ``jobs=False`` puts every data-quality job on an hour's period (the event loop's baseline);
    ``timed`` jobs (those that spend REST weight) are run ``runs`` times each, alone, instead.
    """
    durations: dict[str, list[float]] = {}
    budget_waits: dict[str, list[float]] = {}  # timed jobs: real seconds their requests waited for weight
    periods = PERIODS if jobs else {**PERIODS, **{k: 3600.0 for k in PERIODS if "reconciliation" in k
                                                  or k.startswith(("jobs.dataqual", "jobs.gap", "jobs.publish",
                                                                   "websocket.heartbeat"))}}
    with simulator(symbols_named(n_symbols), speed=3, kline_update_ms=750) as urls, \
            tempfile.TemporaryDirectory() as tmp:
        config = Config().replace(**{
            "symbols": symbols_named(n_symbols), "websocket.base_url": urls["ws"], "websocket.rest_url": urls["rest"],
            "storage.data_dir": str(Path(tmp) / "data"), **periods, **changes,
        })
        service = Service(config)

        async def main() -> None:
            try:
                await service.start()
                if timed:
                    await asyncio.sleep(5.0)  # start-up snapshots and back-fill done, their weight spent
                    rest = service.feed.rest
                    for job in timed:
                        for _ in range(runs):
                            started, waited = time.perf_counter(), rest.budget_wait_s
                            await service.scheduler.run_now(job)
                            durations.setdefault(job, []).append(time.perf_counter() - started)
                            # summed over the run's concurrent requests: how much of it was the weight budget
                            budget_waits.setdefault(job, []).append(rest.budget_wait_s - waited)
                            await asyncio.sleep(1.0)
                    return
                deadline = time.monotonic() + seconds
                seen: dict[str, int] = {}
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    for name, stats in service.scheduler.stats.items():
                        if stats.runs > seen.get(name, 0):
                            seen[name] = stats.runs
                            durations.setdefault(name, []).append(stats.last_duration_s)
            finally:
                await service.stop()

        asyncio.run(main())
        lag = service.feed.lag.max * 1000
        tally = {k: v.checked for k, v in service.quality.reconciler.tally.items()}
    return {"durations": durations, "budget_waits": budget_waits, "loop_lag_max_ms": lag, "checked": tally}


def run(quick: bool) -> list[Figure]:
    seconds = 20.0 if quick else 60.0
    small, large = measure_jobs(2, seconds), measure_jobs(200, seconds)
    figures = []
    for job in ("heartbeat", "dataqual", "reconcile_klines", "reconcile_trades", "gap_check", "publish", "flush",
                "status"):
        big, little = large["durations"].get(job, []), small["durations"].get(job, [])
        if not big or not little:
            continue
        figures.append(Figure(
            "jobs", f"{job}: mean run, 200 symbols", statistics.mean(big) * 1000, "ms",
            statistics.mean(little) * 1000, "2 symbols", better="lower",
            notes={"runs": len(big), "max_ms": round(max(big) * 1000, 1)},
        ))
    quiet = measure_jobs(200, seconds, jobs=False)
    figures.append(Figure("jobs", "event-loop lag, worst, 200 symbols, every job every 0.5-2 s",
                          large["loop_lag_max_ms"], "ms", quiet["loop_lag_max_ms"], "no data-quality jobs",
                          better="lower", notes={"checked": large["checked"]}))
    alone = {k: 3600.0 for k in PERIODS if "reconciliation" in k}  # REST spent only by the timed runs
    for mode, job, what in (({}, "depth_check", "depth snapshot check"),
                            (FALLBACK, "reconcile_klines", "fallback REST reconciliation (x 5 intervals)")):
        little = measure_jobs(2, 0, timed=(job,), **alone, **mode)["durations"].get(job, [])
        measured = measure_jobs(200, 0, timed=(job,), **alone, **mode)
        big, waits = measured["durations"].get(job, []), measured["budget_waits"].get(job, [])
        if big and little:
            figures.append(Figure("jobs", f"{what}: one run, 200 symbols", statistics.mean(big) * 1000, "ms",
                                  statistics.mean(little) * 1000, "2 symbols", better="lower",
                                  notes={"max_ms": round(max(big) * 1000, 1),
                                         "budget_wait_s_summed": round(statistics.mean(waits), 1) if waits else 0.0}))
    return figures
