"""Scheduled jobs in the running service against the simulator: what users see in the tables and status.json.

The simulator runs at 60x (a 1m bar per real second); the service's timers are tenths of a
second. Tables are read the way another process reads them: the published Parquet copies,
through a separate DuckDB connection (or a real subprocess).
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from klinestore.config import Config
from klinestore.core.intervals import MINUTE_MS
from klinestore.service import Service
from klinestore.sim import SimThread
from klinestore.storage import read_bars
from klinestore.storage.tables import TABLE_COLUMNS, published_glob
from simfixtures import START_MS, SimFactory
from support import klinestore_command, subprocess_env
from test_ingest_sim import FAST, a, all_subscribed, books_synced, until

JOBS_FAST: dict[str, Any] = {
    **FAST,
    "storage.flush_interval": 0.3,
    "jobs.status_interval": 0.3,
    "jobs.dataqual_interval": 0.2,
    "jobs.publish_interval": 0.3,
    "jobs.gap_check_interval": 0.3,
    "jobs.stale_after": 120.0,  # 2 real seconds: a loaded test machine is not a stale exchange
    "websocket.reconciliation.kline_interval": 0.5,
    "websocket.reconciliation.aggtrade_interval": 0.3,
    "websocket.reconciliation.depth_interval": 0.3,
}
FALLBACK = {"modes.websocket_only_klines": False, "modes.disable_rest_fallback": False,
            "websocket.cache.kline_1m_history": 30, "websocket.cache.kline_max_size": 10}
#: Connections that outlast a few bar lengths of silence (the simulator's stall), so bars go missing.
PATIENT = {"websocket.heartbeat.timeout": 3.0, "websocket.ping.interval": 1.0, "websocket.ping.timeout": 3.0}


def jobs_config(sim: SimThread, data: Path, **changes: Any) -> Config:
    return Config().replace(**{**JOBS_FAST, "websocket.base_url": sim.ws_url, "websocket.rest_url": sim.rest_url,
                               "storage.data_dir": str(data), **changes})


def run_service(config: Config, scenario: Callable[[Service], Awaitable[None]]) -> Service:
    """Start the service, run ``scenario`` once it is subscribed, stop it; return it."""
    service = Service(config)

    async def main() -> None:
        await service.start()
        try:
            await until(lambda: all_subscribed(service.feed), what="subscriptions")
            await scenario(service)
        finally:
            await service.stop()

    asyncio.run(main())
    return service


def table(data: Path, name: str) -> pl.DataFrame:
    """A published table, read by a DuckDB connection of its own (times as epoch ms)."""
    times = {c for c, kind in TABLE_COLUMNS[name] if kind == "TIMESTAMPTZ"}
    cols = ", ".join(f"epoch_ms({c}) AS {c}" if c in times else c for c, _ in TABLE_COLUMNS[name])
    return duckdb.connect().sql(f"SELECT {cols} FROM read_parquet('{published_glob(data, name)}')").pl()


def score(service: Service, symbol: str) -> float | None:
    s = service.quality.monitor.scores.get(symbol)
    return None if s is None else s.score


def truth_1m(sim: SimThread, symbol: str = "BTCUSDT") -> dict[int, list[Any]]:
    return {row[0]: row for row in sim.truth(symbol, "1m")}


def stored_opens(data: Path, symbol: str = "BTCUSDT", interval: str = "1m") -> list[int]:
    return read_bars(data, symbol, interval).get_column("open_time").dt.epoch("ms").to_list()


def test_a_stalled_stream_costs_its_symbol_exactly_the_seeds_penalty_and_recovers(
    tmp_path: Path, sim: SimThread
) -> None:
    data = tmp_path / "data"

    async def scenario(service: Service) -> None:
        await until(lambda: score(service, "BTCUSDT") == 1.0 and score(service, "ETHUSDT") == 1.0, what="scores")
        await a(sim, "inject", {"kind": "stall_stream", "stream": "btcusdt@aggTrade", "seconds": 2.5})
        await until(lambda: score(service, "BTCUSDT") == pytest.approx(0.90), what="the missing stream scored")
        assert score(service, "ETHUSDT") == 1.0
        await until(lambda: score(service, "BTCUSDT") == 1.0, timeout=15, what="recovery")
        await asyncio.sleep(0.3)  # a few rows after the recovery

    run_service(jobs_config(sim, data), scenario)
    rows = table(data, "dataqual").sort("ts")
    assert rows.columns == ["ts", "symbol", "score", "missing_streams", "mismatches", "gaps", "reasons"]
    eth, btc = rows.filter(pl.col("symbol") == "ETHUSDT"), rows.filter(pl.col("symbol") == "BTCUSDT")
    assert eth.height >= 3 and eth["score"].to_list() == [1.0] * eth.height and set(eth["reasons"]) == {"ok"}
    assert set(btc["score"]) == {1.0, 0.9}
    fallen = btc.filter(pl.col("score") == 0.9)
    assert set(fallen["missing_streams"]) == {1}
    assert set(fallen["reasons"]) == {"1 stream missing (btcusdt@aggTrade): -0.10"}
    assert btc["score"][-1] == 1.0 and btc["ts"].is_sorted()
    status = json.loads((data / "status.json").read_text())
    assert status["dataqual"]["BTCUSDT"]["score"] == 1.0 and status["dataqual"]["BTCUSDT"]["reasons"] == "ok"
    assert status["alerts"] == []  # 0.90 is not below the 0.90 line
    assert status["reconciliation"]["aggtrades"]["mismatched"] == 0  # trades lost in the stall are skipped


def test_fallback_replaces_a_corrected_bar_with_the_rest_one(tmp_path: Path, sim: SimThread) -> None:
    data = tmp_path / "data"
    found: list[int] = []

    async def scenario(service: Service) -> None:
        backfill = service.feed.backfill
        assert backfill is not None
        series = service.feed.state.series("BTCUSDT", "1m")
        await until(lambda: backfill.pending == 0 and len(series.ring) >= 30, what="history back-filled")
        await a(sim, "inject", {"kind": "kline_mismatch", "symbol": "BTCUSDT", "interval": "1m"})
        tally = service.quality.reconciler.tally["rest"]
        for _ in range(3):  # a bar whose WebSocket close is late under load is compared again by the next run
            await service.scheduler.run_now("reconcile_klines")
            if tally.replaced:
                break
        assert tally.replaced == 1
        found.append(tally.checked)

    service = run_service(jobs_config(sim, data, **FALLBACK, **{"websocket.reconciliation.kline_interval": 3600}),
                          scenario)
    rows = table(data, "reconciliations")
    assert set(rows["field"]) >= {"close", "volume"} and rows["symbol"].unique().to_list() == ["BTCUSDT"]
    assert set(rows["ref_source"]) == {"rest"} and set(rows["action"]) == {"replaced"} and set(rows["interval"]) == {"1m"}
    (open_time,) = rows["open_time"].unique().to_list()
    close = rows.filter(pl.col("field") == "close")
    corrected = truth_1m(sim)[open_time]  # the exchange's record is the corrected bar now
    assert close["ref_value"].item() == float(corrected[4]) != close["ws_value"].item()
    stored = read_bars(data, "BTCUSDT", "1m", open_time, open_time + 1).row(0, named=True)
    assert (stored["close"], stored["volume"], stored["trades"], stored["source"]) == (
        float(corrected[4]), float(corrected[5]), corrected[8], "rest")
    ring = service.feed.state.series("BTCUSDT", "1m").frame(allow_gaps=True)
    assert ring.filter(pl.col("open_time").dt.epoch("ms") == open_time)["close"].item() == float(corrected[4])
    quality = table(data, "dataqual").filter(pl.col("symbol") == "BTCUSDT").sort("ts")
    assert quality["mismatches"][-1] == 1 and quality["score"][-1] < 1.0
    assert "reconciliation mismatches" in quality["reasons"][-1]
    assert found and found[0] >= 4  # every symbol and interval was compared


def test_websocket_only_records_gaps_exactly_and_closes_them_when_an_import_fills_them(
    tmp_path: Path, sim_factory: SimFactory
) -> None:
    sim = sim_factory(symbols=("BTCUSDT", "ETHUSDT"), speed=60, seed=7, start_ms=START_MS)
    data = tmp_path / "data"
    seen: dict[str, Any] = {}

    async def scenario(service: Service) -> None:
        series = service.feed.state.series("BTCUSDT", "1m")
        await until(lambda: len(series.ring) >= 3, what="bars before the stall")
        await a(sim, "inject", {"kind": "stall", "seconds": 4})
        gaps = service.quality.gaps.book
        await until(lambda: gaps.missing_bars("BTCUSDT", "1m", START_MS, START_MS + 86_400_000) > 0, timeout=20,
                    what="a 1m gap")
        after = series.last_open_time
        await until(lambda: all_subscribed(service.feed) and series.last_open_time >= after + 2 * MINUTE_MS,
                    timeout=20, what="recovery")
        for job in ("flush", "gap_check", "heartbeat", "publish"):
            await service.scheduler.run_now(job)
        seen["gaps"] = await asyncio.to_thread(published_in_subprocess, data)
        seen["stored"] = await asyncio.to_thread(stored_opens, data)
        seen["score"] = service.quality.monitor.scores["BTCUSDT"]
        # another process imports the missing bars; the gap check closes the records
        missing = await asyncio.to_thread(write_archive, tmp_path / "archive", truth_1m(sim), seen["stored"])
        seen["imported"] = missing
        proc = await asyncio.to_thread(subprocess.run, klinestore_command(
            "import", str(tmp_path / "archive"), "--data-dir", str(data)), env=subprocess_env(), capture_output=True,
            text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        await service.scheduler.run_now("gap_check")
        await service.scheduler.run_now("heartbeat")
        seen["score_after"] = service.quality.monitor.scores["BTCUSDT"]
        await service.scheduler.run_now("publish")

    service = run_service(jobs_config(sim, data, **PATIENT), scenario)
    truth = truth_1m(sim)
    stored = seen["stored"]
    gaps = seen["gaps"].filter((pl.col("symbol") == "BTCUSDT") & (pl.col("interval") == "1m"))
    assert gaps.height >= 1 and gaps["filled_at"].null_count() == gaps.height
    assert set(gaps["reason"]) <= {"reconnect", "gap"}
    covered = {t for s, e in gaps.select("start_time", "end_time").iter_rows()
               for t in range(s, e + MINUTE_MS, MINUTE_MS)}
    missing = {t for t in truth if stored[0] <= t <= stored[-1]} - set(stored)
    assert missing and covered == missing  # every missing bar in a row, no row over a stored bar
    assert seen["imported"] == sorted(missing)
    assert seen["score"].gaps == len(missing) and seen["score"].penalties["gaps"] == pytest.approx(0.01 * len(missing))
    # after the import: the records are filled, the score is whole again
    final = table(data, "gaps").filter((pl.col("symbol") == "BTCUSDT") & (pl.col("interval") == "1m"))
    assert final["filled_at"].null_count() == 0
    assert sorted(final.select("start_time", "end_time").rows()) == sorted(gaps.select("start_time", "end_time").rows())
    assert seen["score_after"].gaps == 0 and "missing 1m" not in seen["score_after"].reason_text
    # WebSocket-only: not one REST klines call, reconciliation included
    assert sim.ledger()["/fapi/v1/klines"] == 0
    assert service.scheduler.stats["reconcile_klines"].runs > 3 and service.scheduler.stats["reconcile_klines"].failures == 0
    tallies = service.quality.reconciler.tally
    assert tallies["aggtrades"].mismatched == tallies["resample"].mismatched == 0
    events = table(data, "connection_events")
    assert "LOST" in set(events["to_state"]) and "DISCONNECTED" in set(events["to_state"])


def published_in_subprocess(data: Path) -> pl.DataFrame:
    """The published ``gaps`` table as another process reads it while the service runs."""
    code = textwrap.dedent(f"""
        import duckdb, json
        rows = duckdb.connect().sql(
            "SELECT symbol, interval, epoch_ms(start_time), epoch_ms(end_time), epoch_ms(filled_at), reason "
            "FROM read_parquet('{published_glob(data, 'gaps')}')").fetchall()
        print(json.dumps(rows))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return pl.DataFrame(json.loads(proc.stdout), orient="row",
                        schema=["symbol", "interval", "start_time", "end_time", "filled_at", "reason"])


def write_archive(folder: Path, truth: dict[int, list[Any]], stored: list[int]) -> list[int]:
    """A data.binance.vision-style CSV of the truth's bars that storage lacks; returns their open times."""
    missing = sorted(t for t in truth if stored[0] <= t <= stored[-1] and t not in set(stored))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "BTCUSDT-1m-2024-05-01.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(truth[t] for t in missing)
    return missing


def test_fallback_back_fills_a_stall_and_fills_the_records(tmp_path: Path, sim: SimThread) -> None:
    data = tmp_path / "data"

    async def scenario(service: Service) -> None:
        backfill = service.feed.backfill
        assert backfill is not None
        series = service.feed.state.series("BTCUSDT", "1m")
        await until(lambda: backfill.pending == 0 and len(series.ring) >= 30, what="history back-filled")
        await a(sim, "inject", {"kind": "stall", "seconds": 5})
        await until(lambda: service.quality.gaps.opened > 0, timeout=20, what="a gap")
        await until(lambda: all_subscribed(service.feed) and backfill.pending == 0
                    and service.quality.gaps.book.bars("1m") == 0, timeout=20, what="back-filled")
        await asyncio.sleep(1.0)

    run_service(jobs_config(sim, data, **FALLBACK, **PATIENT), scenario)
    truth = truth_1m(sim)
    stored = read_bars(data, "BTCUSDT", "1m")
    opens = stored.get_column("open_time").dt.epoch("ms").to_list()
    assert opens == list(range(opens[0], opens[-1] + MINUTE_MS, MINUTE_MS))  # nothing missing
    for row in stored.iter_rows(named=True):
        t = int(row["open_time"].timestamp() * 1000)
        assert (row["open"], row["high"], row["low"], row["close"], row["volume"]) == tuple(float(x) for x in truth[t][1:6])
    gaps = table(data, "gaps").filter(pl.col("interval") == "1m")
    assert gaps.height >= 1 and gaps["filled_at"].null_count() == 0
    assert "rest" in set(stored["source"])


def test_order_book_resyncs_are_recorded_from_the_stream_and_from_the_snapshot_check(
    tmp_path: Path, sim: SimThread
) -> None:
    data = tmp_path / "data"

    async def scenario(service: Service) -> None:
        await until(lambda: books_synced(service.feed), what="books in sync")
        book = service.feed.book("BTCUSDT")
        await a(sim, "inject", {"kind": "depth_gap", "symbol": "BTCUSDT"})
        await until(lambda: book.resyncs >= 1 and book.synced, what="the chain break healed")
        await service.scheduler.run_now("heartbeat")
        assert score(service, "BTCUSDT") == pytest.approx(0.98, abs=0.001)
        assert score(service, "ETHUSDT") == 1.0
        # a depth stream that stalls: the snapshot check finds the book behind and not catching up
        # (within 4 pushes: 4 x 500 ms of exchange time, once the clock knows it runs 60x)
        await until(lambda: service.feed.clock.rate > 10, what="the clock's rate learned")
        await a(sim, "inject", {"kind": "stall_stream", "stream": "btcusdt@depth@500ms", "seconds": 3})
        await asyncio.sleep(0.2)
        await service.scheduler.run_now("depth_check")
        assert service.quality.depth.resyncs_requested == 1
        await until(lambda: book.synced, what="resynced from a full snapshot")

    run_service(jobs_config(sim, data, **{"websocket.reconciliation.depth_interval": 3600}), scenario)
    rows = table(data, "reconciliations").filter(pl.col("interval") == "depth").sort("ts")
    assert set(rows["symbol"]) == {"BTCUSDT"} and set(rows["action"]) == {"resynced"}
    chain = rows.filter(pl.col("ref_source") == "depth_stream")
    assert chain.height == 1 and chain["field"].item() == "pu" and chain["ref_value"].item() > chain["ws_value"].item()
    check = rows.filter(pl.col("ref_source") == "rest")
    assert check.height == 1 and check["field"].item() == "last_update_id"
    assert check["ref_value"].item() - check["ws_value"].item() > 100


def test_a_failing_job_is_counted_and_the_service_goes_on(tmp_path: Path, sim: SimThread) -> None:
    data = tmp_path / "data"

    async def scenario(service: Service) -> None:
        assert service.store is not None

        def broken() -> None:
            raise OSError("disk on fire")

        service.store.compact = broken  # type: ignore[method-assign]
        await until(lambda: service.scheduler.stats["compaction"].failures >= 3, what="failures")
        closed = service.feed.dispatcher.closed
        flushes = service.flushes
        await until(lambda: service.feed.dispatcher.closed > closed + 1 and service.flushes > flushes,
                    what="ingest and the other jobs going on")

    run_service(jobs_config(sim, data, **{"storage.compaction_interval": 0.1}), scenario)
    jobs = json.loads((data / "status.json").read_text())["jobs"]
    assert jobs["compaction"]["failures"] >= 3 and jobs["compaction"]["last_error"] == "OSError: disk on fire"
    assert all(stats["failures"] == 0 for name, stats in jobs.items() if name != "compaction")
    assert jobs["flush"]["runs"] >= 2 and jobs["status"]["runs"] >= 2 and jobs["dataqual"]["runs"] >= 2


def test_shutdown_records_and_publishes_once_more(tmp_path: Path, sim: SimThread) -> None:
    data = tmp_path / "data"
    slow = {"jobs.dataqual_interval": 3600, "jobs.publish_interval": 3600}

    async def scenario(service: Service) -> None:
        await until(lambda: service.feed.dispatcher.closed >= 4, what="bars")
        assert not list((data / "tables").glob("dataqual/*.parquet"))  # nothing published yet

    service = run_service(jobs_config(sim, data, **slow), scenario)
    rows = table(data, "dataqual")
    assert sorted(rows["symbol"]) == ["BTCUSDT", "ETHUSDT"] and set(rows["score"]) == {1.0}
    events = table(data, "connection_events")
    assert events.filter(pl.col("to_state") == "DISCONNECTED").height == len(service.feed.pool.connections)
    calls = table(data, "api_calls")
    assert set(calls["endpoint"]) >= {"/fapi/v1/depth", "/fapi/v1/exchangeInfo"}
    status = json.loads((data / "status.json").read_text())
    assert status["running"] is False and status["tables"]["last_publish"] is not None
    assert status["jobs"]["dataqual"]["runs"] == 0  # the rows came from the shutdown, not from the job
    assert status["wal"]["pending_bars"] == 0 and status["last_flush"] is not None


def test_alerts_are_raised_and_cleared(tmp_path: Path, sim: SimThread, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    caplog.set_level(logging.INFO, "klinestore.jobs.alerts")
    up: dict[str, list[dict[str, Any]]] = {}
    alerting = {"alerts.max_reconnects_per_hour": 1, "alerts.reconnect_window": 240.0, "alerts.dataqual_min": 0.95}

    async def scenario(service: Service) -> None:
        for _ in range(2):
            await a(sim, "inject", {"kind": "drop"})
            await until(lambda: all_subscribed(service.feed) and service.feed.pool.reconnects() > 0, what="reconnected")
        await a(sim, "inject", {"kind": "stall_stream", "stream": "ethusdt@markPrice@1s", "seconds": 2})
        await until(lambda: {a["kind"] for a in service.quality.alerts.to_list()} >= {"reconnects", "dataqual"},
                    what="alerts raised")
        await service.write_status()
        up["raised"] = json.loads((data / "status.json").read_text())["alerts"]
        await until(lambda: not any(a["kind"] in ("reconnects", "dataqual") for a in service.quality.alerts.to_list()),
                    timeout=20, what="alerts cleared")

    run_service(jobs_config(sim, data, **alerting), scenario)
    raised = {(a["kind"], a.get("symbol")): a for a in up["raised"]}
    assert ("reconnects", None) in raised and ("dataqual", "ETHUSDT") in raised
    assert "connection losses" in raised[("reconnects", None)]["detail"]
    assert "ethusdt@markPrice@1s" in raised[("dataqual", "ETHUSDT")]["detail"]
    assert all({"kind", "since", "detail", "level", "message"} <= set(a) for a in up["raised"])
    logged = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert ("WARNING", "alert") in logged and ("INFO", "alert cleared") in logged


def test_healthy_bars_agree_with_their_websocket_only_references(tmp_path: Path, sim: SimThread) -> None:
    data = tmp_path / "data"

    async def scenario(service: Service) -> None:
        tally = service.quality.reconciler.tally
        await until(lambda: tally["resample"].checked >= 1 and tally["aggtrades"].checked >= 3, timeout=20,
                    what="5m bars against their 1m buckets, 1m bars against their trades")

    service = run_service(jobs_config(sim, data), scenario)
    tally = service.quality.reconciler.tally
    assert tally["resample"].mismatched == tally["aggtrades"].mismatched == 0
    rows = table(data, "reconciliations")
    assert rows.height == 0, rows.to_dicts()
    assert set(table(data, "dataqual")["score"]) == {1.0}
    assert sim.ledger()["/fapi/v1/klines"] == 0


@pytest.mark.soak
def test_under_a_schedule_of_faults_the_tables_stay_true(tmp_path: Path, sim: SimThread, long_run: bool) -> None:
    """Faults of every kind, one after another; then the tables are checked against the truth."""
    data = tmp_path / "data"
    seconds = 180.0 if long_run else 10.0
    faults: list[dict[str, Any]] = [
        {"kind": "drop"}, {"kind": "stall_stream", "stream": "btcusdt@kline_5m", "seconds": 1.0},
        {"kind": "depth_gap", "symbol": "ETHUSDT"}, {"kind": "malformed", "count": 3},
        {"kind": "duplicate", "count": 5}, {"kind": "out_of_order", "count": 2}, {"kind": "stall", "seconds": 1.5},
        {"kind": "reset"},
    ]

    async def scenario(service: Service) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        i = 0
        while asyncio.get_running_loop().time() < deadline:
            await a(sim, "inject", faults[i % len(faults)])
            i += 1
            await asyncio.sleep(1.2)
        await until(lambda: all_subscribed(service.feed), timeout=20, what="all connections back")
        await asyncio.sleep(1.5)  # a few healthy bars at the end

    service = run_service(jobs_config(sim, data), scenario)
    assert all(stats["failures"] == 0 for stats in service.scheduler.snapshot().values())
    assert sim.ledger()["/fapi/v1/klines"] == 0
    gaps = table(data, "gaps")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        stored = stored_opens(data, symbol)
        missing = {t for t in truth_1m(sim, symbol) if stored[0] <= t <= stored[-1]} - set(stored)
        open_rows = gaps.filter((pl.col("symbol") == symbol) & (pl.col("interval") == "1m") & pl.col("filled_at").is_null())
        covered = {t for s, e in open_rows.select("start_time", "end_time").iter_rows()
                   for t in range(s, e + MINUTE_MS, MINUTE_MS)}
        assert covered == missing, symbol
        truth = truth_1m(sim, symbol)
        for row in read_bars(data, symbol, "1m").iter_rows(named=True):  # nothing stored is wrong
            t = int(row["open_time"].timestamp() * 1000)
            assert (row["close"], row["volume"]) == (float(truth[t][4]), float(truth[t][5]))
    klines = table(data, "reconciliations").filter(pl.col("interval") != "depth")
    assert klines.height == 0, klines.to_dicts()  # duplicates, reordering and losses are never mismatches
    quality = table(data, "dataqual")
    assert quality.height > 0 and quality["score"].is_between(0, 1).all()
    assert (quality.filter(pl.col("score") < 1)["reasons"] != "ok").all()
