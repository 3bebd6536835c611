"""The service with storage: bars durable in the WAL and Parquet, warm restart, the start gap."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from klinestore.config import Config
from klinestore.core.intervals import MINUTE_MS
from klinestore.service import Service
from klinestore.storage import read_bars
from simfixtures import START_MS, SimFactory
from test_ingest_sim import FAST, until


def service_config(sim: Any, data: Path, **changes: Any) -> Config:
    return Config().replace(**{
        **FAST, "websocket.base_url": sim.ws_url, "websocket.rest_url": sim.rest_url,
        "storage.data_dir": str(data), "storage.flush_interval": 0.5, "jobs.status_interval": 0.5, **changes,
    })


def run_service(config: Config, bars: int) -> Service:
    service = Service(config)

    async def main() -> None:
        await service.start()
        try:
            series = service.feed.state.series("BTCUSDT", "1m")
            start = series.last_open_time
            await until(lambda: series.last_open_time >= start + bars * MINUTE_MS if start >= 0 else len(series.ring) >= bars,
                        what=f"{bars} live bars")
        finally:
            await service.stop()

    asyncio.run(main())
    return service


def test_closed_bars_reach_parquet_and_a_restart_is_warm(tmp_path: Path, sim_factory: SimFactory) -> None:
    data = tmp_path / "data"
    sim = sim_factory(symbols=("BTCUSDT", "ETHUSDT"), speed=60, seed=7, start_ms=START_MS)
    first = run_service(service_config(sim, data), bars=3)
    truth = {row[0]: row for row in sim.truth("BTCUSDT", "1m")}
    sim.stop()
    stored = read_bars(data, "BTCUSDT", "1m").sort("open_time")
    assert stored.height >= 3 and first.store is not None and first.store.pending_bars == 0  # closing flushed
    for row in stored.iter_rows(named=True):
        t = int(row["open_time"].timestamp() * 1000)
        assert (row["close"], row["volume"], row["source"]) == (float(truth[t][4]), float(truth[t][5]), "ws")
    last_stored = int(stored["open_time"][-1].timestamp() * 1000)

    # Ten exchange minutes later: the rings start full from disk, the hole is a "start" gap.
    later = last_stored + 10 * MINUTE_MS
    sim = sim_factory(symbols=("BTCUSDT", "ETHUSDT"), speed=60, seed=7, start_ms=later)
    gaps: list[tuple[Any, ...]] = []
    second = Service(service_config(sim, data))
    second.feed.on_gap(lambda *gap: gaps.append(gap))

    async def main() -> None:
        await second.start()
        try:
            assert second.warm_bars >= stored.height
            series = second.feed.state.series("BTCUSDT", "1m")
            assert len(series.ring) >= 3 and series.last_open_time == last_stored
            await until(lambda: any(g[:2] == ("BTCUSDT", "1m") for g in gaps), what="the start gap")
        finally:
            await second.stop()

    asyncio.run(main())
    gap = next(g for g in gaps if g[:2] == ("BTCUSDT", "1m"))
    assert gap[2] == last_stored + MINUTE_MS and gap[4] == "start" and gap[3] >= later - 2 * MINUTE_MS
    assert second.restart is not None and second.restart.corrupt_records == 0


def test_metrics_endpoint_of_a_running_service_agrees_with_its_status(tmp_path: Path, sim_factory: SimFactory) -> None:
    sim = sim_factory(symbols=("BTCUSDT", "ETHUSDT"), speed=60, seed=7, start_ms=START_MS)
    service = Service(service_config(sim, tmp_path / "data", **{"metrics.enabled": True, "metrics.port": 0}))
    scraped: dict[str, float] = {}

    async def main() -> None:
        await service.start()
        try:
            assert service.metrics_url.startswith("http://127.0.0.1:")
            series = service.feed.state.series("BTCUSDT", "1m")
            await until(lambda: series.last_open_time >= 0, what="a closed bar")
            async with httpx.AsyncClient() as client:  # scraped from the loop: the snapshot is built on it too
                text = (await client.get(service.metrics_url, timeout=10)).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if not sample.labels:
                        scraped[sample.name] = sample.value
            assert service.status()["metrics"] == service.metrics_url
        finally:
            await service.stop()

    asyncio.run(main())
    assert scraped["klinestore_up"] == 1 and scraped["klinestore_closed_bars_total"] >= 1
    assert scraped["klinestore_messages_total"] >= scraped["klinestore_closed_bars_total"]
    assert service.metrics_url == ""  # stopped with the service


def test_a_restart_records_what_a_corrupt_wal_and_a_damaged_file_lost(tmp_path: Path, sim_factory: SimFactory) -> None:
    """Issue 14 cases 1 and 7 through the service: a crashed shard left a WAL with one flipped
    byte and a Parquet file that is now zero bytes. It starts anyway, quarantines the file with
    an alert, and records the bars both held as gaps (which DataQual counts until refilled)."""
    from klinestore.config import StorageConfig
    from klinestore.storage import BarStore
    from klinestore.storage.layout import wal_dir
    from klinestore.storage.wal import Wal, segment_paths
    from storage_support import bar

    data = tmp_path / "data"
    t0 = START_MS - 60 * MINUTE_MS
    store = BarStore(data, StorageConfig(wal_fsync_window=0.0, resample_intervals=()))
    store.open()
    store.append([bar(minute=m, t0=t0) for m in range(10)])
    store.flush()  # minutes 0-9 in one Parquet file
    store.close()
    (damaged,) = (data / "bars").rglob("*.parquet")
    damaged.write_bytes(b"")
    wal = Wal(wal_dir(data, "s0000"), fsync_window=0)  # then May's first minutes, killed before the flush
    wal.open()
    for minute in range(10, 20):
        wal.append(minute, [bar(minute=minute, t0=START_MS)])
    wal.close()
    segment = segment_paths(wal_dir(data, "s0000"))[-1]  # the one the appends went to
    raw = bytearray(segment.read_bytes())
    raw[5 * (len(raw) // 10) + len(raw) // 20] ^= 0xFF  # May 1 00:15
    segment.write_bytes(bytes(raw))

    sim = sim_factory(symbols=("BTCUSDT",), speed=60, seed=7, start_ms=START_MS + 60 * MINUTE_MS)
    service = Service(service_config(sim, data))
    opened: list[tuple[Any, ...]] = []

    async def main() -> None:
        await service.start()
        try:
            opened.extend(await asyncio.to_thread(service.quality.db.open_gaps))
            status = service.status()
        finally:
            await service.stop()
        assert any(a["kind"] == "quarantine" for a in status["alerts"]), status["alerts"]

    asyncio.run(main())
    ours = [(g[2], g[3], g[5]) for g in opened if g[:2] == ("BTCUSDT", "1m")]
    # a zero-byte file names nothing it held: its month (April) is in doubt, minutes 0-9 among it
    assert any(r == "quarantine" and a <= t0 and b == START_MS - MINUTE_MS for a, b, r in ours), ours
    assert (START_MS + 15 * MINUTE_MS, START_MS + 15 * MINUTE_MS, "wal_corrupt") in ours, ours
    assert not damaged.exists() and (data / "quarantine").is_dir()


def test_fallback_mode_back_fills_the_bars_a_corrupt_wal_record_lost(tmp_path: Path, sim_factory: SimFactory) -> None:
    """Issue 14 case 7, refilled: in fallback mode the lost bar is fetched from REST like any
    gap's, stored, and its gap record closes."""
    from klinestore.storage.layout import wal_dir
    from klinestore.storage.wal import Wal, segment_paths
    from storage_support import bar

    data = tmp_path / "data"
    sim = sim_factory(symbols=("BTCUSDT",), speed=60, seed=7, start_ms=START_MS + 30 * MINUTE_MS)
    truth = {row[0]: row for row in sim.truth("BTCUSDT", "1m")}
    wal = Wal(wal_dir(data, "s0000"), fsync_window=0)  # the exchange's own bars, then a crash
    wal.open()
    for minute in range(10, 20):
        t = START_MS + minute * MINUTE_MS
        assert t in truth, "the simulator's history covers these minutes"
        wal.append(minute, [bar(minute=minute, t0=START_MS, price=float(truth[t][1]))])
    wal.close()
    segment = segment_paths(wal_dir(data, "s0000"))[-1]
    raw = bytearray(segment.read_bytes())
    raw[5 * (len(raw) // 10) + len(raw) // 20] ^= 0xFF  # minute 15
    segment.write_bytes(bytes(raw))
    lost = START_MS + 15 * MINUTE_MS

    config = service_config(sim, data, **{"symbols": ["BTCUSDT"], "modes.websocket_only_klines": False,
                                          "modes.disable_rest_fallback": False})
    service = Service(config)

    async def main() -> None:
        await service.start()
        try:
            await until(lambda: not any(g[1] == "1m" and g[2] <= lost <= g[3]
                                        for g in service.quality.db.open_gaps("BTCUSDT")),
                        timeout=60, what="the lost bar back-filled and its gap record filled")
        finally:
            await service.stop()

    asyncio.run(main())
    stored = read_bars(data, "BTCUSDT", "1m")
    row = stored.filter(stored["open_time"].dt.epoch("ms") == lost)
    assert row.height == 1 and row["source"][0] == "rest" and row["close"][0] == float(truth[lost][4])
