"""Queries never fail while the writer flushes and compacts (issue 14, case 2).

A compaction retires files that a query may have listed a moment before; with no grace at
all (the harshest case) the file is gone by the time the query opens it. Readers retry on a
fresh listing, so every query answers, and answers every stored bar exactly once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import polars as pl

from klinestore.config import StorageConfig
from klinestore.queries.sql import connect, execute
from klinestore.storage import BarStore
from klinestore.storage.reader import read_bars
from queries_support import T0, minute_bars

MINUTE = 60_000
RUN_S = 4.0  # how long the writer churns; the assertions count failures, never time


def test_queries_never_fail_under_flush_and_compaction(tmp_path: Path) -> None:
    store = BarStore(tmp_path, StorageConfig(wal_fsync_window=0.0, compaction_grace=0.0, compaction_min_files=2))
    store.open()
    bars = minute_bars("BTCUSDT", 3000)
    store.append(bars[:100])
    store.flush()
    written = [100]
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:  # flush a few bars, compact, again: files appear and vanish all the time
        try:
            while not stop.is_set() and written[0] < len(bars):
                store.append(bars[written[0]:written[0] + 5])
                store.flush()
                written[0] += 5
                store.compact()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writer = threading.Thread(target=churn)
    writer.start()
    failures: list[str] = []
    queries = 0
    session = connect(tmp_path)  # a long-lived session sees new files too
    deadline = time.monotonic() + RUN_S
    try:
        while time.monotonic() < deadline and writer.is_alive():
            before = written[0]
            try:
                for con in (session, connect(tmp_path)):
                    frame = pl.from_arrow(execute(con, "SELECT count(*) AS n, count(DISTINCT open_time) AS d "
                                                       "FROM bars_1m").read_all())
                    n, d = frame.row(0)
                    assert n == d >= before, (n, d, before)  # each bar once, none lost
                    if con is not session:
                        con.close()
                stored = read_bars(tmp_path, "BTCUSDT", "1m", T0, T0 + 10_000 * MINUTE)
                assert stored.height >= before and stored.get_column("open_time").is_unique().all()
            except Exception as exc:  # noqa: BLE001 - counted: the test is that there are none
                failures.append(f"{type(exc).__name__}: {exc}")
            queries += 3
    finally:
        stop.set()
        writer.join(timeout=60)
        session.close()
        store.close()
    assert not errors, errors
    assert queries >= 30
    assert failures == [], f"{len(failures)} of {queries} queries failed: {failures[:3]}"


def test_queries_against_a_running_service_that_flushes_and_compacts(tmp_path: Path, sim_factory) -> None:
    """The issue's stress test: a service flushing every 0.5 s and compacting every second
    (no grace at all, two files enough to merge); SQL sessions and Python readers in a loop."""
    import asyncio

    from klinestore.service import Service
    from simfixtures import START_MS
    from test_service import service_config

    sim = sim_factory(symbols=("BTCUSDT", "ETHUSDT"), speed=600, seed=7, start_ms=START_MS)
    config = service_config(sim, tmp_path / "data", **{
        "storage.flush_interval": 0.5, "storage.compaction_interval": 1.0, "storage.compaction_grace": 0.0,
        "storage.compaction_min_files": 2})
    service = Service(config)
    failures: list[str] = []
    counts: list[int] = []

    def query_loop(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                con = connect(tmp_path / "data")
                try:
                    frame = pl.from_arrow(execute(con, "SELECT count(*) AS n, count(DISTINCT (symbol, open_time)) "
                                                       "AS d FROM bars_1m").read_all())
                finally:
                    con.close()
                n, d = frame.row(0)
                assert n == d, (n, d)
                counts.append(n)
                read_bars(tmp_path / "data", "BTCUSDT", "1m")
            except Exception as exc:  # noqa: BLE001 - counted: the test is that there are none
                failures.append(f"{type(exc).__name__}: {exc}")

    async def main() -> None:
        await service.start()
        stop = threading.Event()
        reader = threading.Thread(target=query_loop, args=(stop,))
        reader.start()
        try:
            await asyncio.sleep(RUN_S)
        finally:
            stop.set()
            await asyncio.to_thread(reader.join, 60)
            await service.stop()

    asyncio.run(main())
    assert service.compactions >= 2 and len(counts) >= 5
    assert counts == sorted(counts)  # bars only ever appear
    assert failures == [], f"{len(failures)} of {len(counts) + len(failures)} queries failed: {failures[:3]}"
