"""`klinestore run` killed with SIGKILL again and again, during flushes, compactions and an import.

The exchange is `klinestore sim` replaying the real BTCUSDT 1m archives of ../shared/data
from 2023-01-03 at 600x (ten 1m bars a second); the service runs in fallback mode with
flush, compaction, status and gap-check timers of a fraction of a second, so random kills
land inside them. Archives of the two days *before* the live start are imported into the
same data directory by `klinestore import` while the service runs: the importer is another
writer (``imp``, its own lock, journals and files; storage/layout.py), which the design
supports, and realistic archives always lie in the past. Kills of the import land inside its
publish and are followed by a rerun.

Every kill is SIGSTOP, snapshot, SIGKILL (tests/e2e/crashkit.py): the snapshot holds every
bar the service had durably received (its WAL records) or published (the deduplicated view).
After each restart everything received before must still be there; at the end (one more
restart, the import finished, back-fills done, a clean SIGTERM) the data directory must be
readable file by file, unique per key, without a hole, and equal to the exchange's record.

Seed: ``KLINESTORE_CRASH_SEED`` (printed; a failure names it). The normal suite kills 20 times
(about 45 s: a restart costs ~1.3 s of interpreter and imports), ``pytest --long`` 50 times;
each kind at least once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from klinestore.core.intervals import MINUTE_MS
from tests.e2e.crashkit import (
    Snapshot,
    check_dataset,
    freeze_and_kill,
    in_flight,
    rest_values,
    start_import,
    start_service,
    started_since,
    status,
    stop,
    stored_bars,
    truth_values,
    wait_for,
)
from tests.e2e.fidelity import SimProcess

SYMBOL = "BTCUSDT"
LIVE_START = "2023-01-06T00:00Z"
IMPORT_DAYS = ("2023-01-01", "2023-01-02", "2023-01-03", "2023-01-04", "2023-01-05")
RESAMPLED = ("5m", "15m", "1h", "4h")
KINDS = ("random", "flush", "compaction", "import")

CONFIG: dict[str, Any] = {
    "symbols": [SYMBOL],
    "websocket": {
        "streams": {"kline_intervals": ["1m"], "depth": False, "mark_price": False, "aggtrade": False},
        "heartbeat": {"check_interval": 0.2, "timeout": 2.0, "resubscribe_after": 1.0},
        "reconnect": {"base_delay": 0.05, "max_delay": 0.3, "failed_retry_interval": 0.5, "open_timeout": 2.0},
        "ping": {"interval": 1.0, "timeout": 1.0},
        "cache": {"kline_1m_history": 300},  # back-fills at start reach 5 h back: the import writes the rest
    },
    "modes": {"websocket_only_klines": False, "disable_rest_fallback": False},
    "rest": {"retry_base_delay": 0.02, "retry_max_delay": 0.1},
    "storage": {"flush_interval": 0.3, "wal_fsync_window": 0.05, "compaction_interval": 0.7,
                "compaction_min_files": 3, "compaction_grace": 0.5},
    "jobs": {"status_interval": 0.2, "gap_check_interval": 0.5, "dataqual_interval": 1.0, "publish_interval": 1.0},
}


def kill_plan(rng: random.Random, kills: int) -> list[str]:
    """Every kind at least once, the rest random, in a random order."""
    plan = list(KINDS) + [rng.choice(KINDS) for _ in range(kills - len(KINDS))]
    rng.shuffle(plan)
    return plan


def archive_rows(paths: list[Path]) -> dict[int, tuple[Any, ...]]:
    out = {}
    for path in paths:
        with zipfile.ZipFile(path) as archive:
            for line in archive.read(archive.namelist()[0]).decode().splitlines():
                row = line.split(",")
                if row[0].isdigit():
                    out[int(row[0])] = rest_values([int(row[0]), *row[1:6], int(row[6]), row[7], int(row[8]), *row[9:]])
    return out


@pytest.mark.soak
@pytest.mark.real_data
def test_sigkill_loop_loses_nothing_received(tmp_path: Path, shared_data: Path, long_run: bool) -> None:
    seed = int(os.environ.get("KLINESTORE_CRASH_SEED", random.randrange(2**32)))
    print(f"crash loop seed {seed} (KLINESTORE_CRASH_SEED={seed} reproduces the plan)")
    rng = random.Random(seed)
    plan = kill_plan(rng, 50 if long_run else 20)
    replay = shared_data / "spot" / "klines" / SYMBOL / "1m"
    # The simulator replays these spot archives as its futures market, so the same days are imported
    # into the futures dataset: linked from a path that does not name the spot market (``import``
    # refuses a path under .../spot/ without --market spot).
    (tmp_path / "archives").mkdir()
    archives = []
    for day in IMPORT_DAYS:
        link = tmp_path / "archives" / f"{SYMBOL}-1m-{day}.zip"
        link.symlink_to(replay / link.name)
        archives.append(link)
    data, config = tmp_path / "data", tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    log = open(tmp_path / "service.log", "a")  # noqa: SIM115
    sim = SimProcess.launch(tmp_path / "sim.log", "--replay", str(replay), "--start", LIVE_START, "--speed", "600")
    snapshots: list[Snapshot] = []
    importer = None
    imported = 0  # days imported to the end (a killed import is rerun with the same day)
    started = time.monotonic()
    try:
        for n, kind in enumerate(plan, 1):
            launched = time.time()
            service = start_service(tmp_path, config, data, sim, log)
            if kind == "import" or rng.random() < 0.25:
                importer = start_import(tmp_path, data, [archives[imported % len(archives)]], log)
            if kind == "random":
                time.sleep(rng.uniform(0.1, 2.5))
            else:
                if kind != "import":
                    wait_for(lambda: started_since(data, launched), timeout=20, what="the service up")
                    time.sleep(rng.uniform(0.0, 0.5))
                wanted = {"flush": "flushing", "compaction": "compacting", "import": "importing"}[kind]
                try:
                    wait_for(lambda: getattr(in_flight(data), wanted)(), timeout=5, what=kind, poll=0.001)
                except AssertionError:
                    pass  # the moment was missed: the kill lands wherever it lands, and says where
            assert service.poll() is None, f"seed {seed}: the service exited by itself before kill {n}"
            snapshot = freeze_and_kill(data, service, importer, launched)
            if importer is not None:  # finished by itself (the next import takes the next day) or killed (rerun)
                assert importer.returncode in (0, -signal.SIGKILL), f"seed {seed}: the import failed before kill {n}"
                importer, imported = None, imported + (importer.returncode == 0)
            print(f"kill {n:2d} ({kind:10s}) at {time.monotonic() - started:5.1f}s landed in {snapshot.moment:28s} "
                  f"wal {len(snapshot.wal):4d} bars, visible {len(snapshot.visible):5d} 1m bars, {imported} days imported")
            if snapshots:
                lost = {k: v for k, v in snapshots[-1].received.items() if snapshot.received.get(k) != v}
                assert not lost, f"seed {seed}: kill {n}: {len(lost)} received bars gone or changed, e.g. {sorted(lost)[:3]}"
            snapshots.append(snapshot)

        # The last run: the import finished, the gaps back-filled, then a clean stop.
        launched = time.time()
        service = start_service(tmp_path, config, data, sim, log)
        importer = start_import(tmp_path, data, archives, log)
        assert importer.wait(timeout=120) == 0, f"seed {seed}: the import rerun failed"
        wait_for(lambda: caught_up(data, launched), timeout=60, what="the service caught up")
        assert stop(service) == 0, f"seed {seed}: the service did not stop cleanly"
        truth = {iv: truth_values(sim, SYMBOL, iv) for iv in ("1m", *RESAMPLED)}
    finally:
        for proc in (importer, locals().get("service")):
            if proc is not None:
                stop(proc)
        sim.stop()
        log.close()

    report = check_dataset(data)
    assert report.problems == [], f"seed {seed}: {report.problems}"
    assert in_flight(data).tmp == {}, f"seed {seed}: tmp files left behind: {in_flight(data).tmp}"
    stored = stored_bars(data)
    received = {k: v for s in snapshots for k, v in s.received.items()}
    lost = {k: v for k, v in received.items() if stored.get(k) != v}
    assert not lost, f"seed {seed}: {len(lost)} received bars lost or changed, e.g. {sorted(lost)[:3]}"
    expected = {**archive_rows(archives), **truth["1m"]}
    wrong = [k for k, v in stored.items() if expected.get(k[2]) != v]
    assert not wrong, f"seed {seed}: {len(wrong)} stored 1m bars differ from the exchange's, e.g. {wrong[:3]}"
    opens = sorted(k[2] for k in stored)
    holes = [t for t in range(opens[0], opens[-1], MINUTE_MS) if (SYMBOL, "1m", t) not in stored]
    assert not holes, f"seed {seed}: {len(holes)} 1m bars missing, e.g. {holes[:3]}"
    assert opens[0] == min(archive_rows(archives)), f"seed {seed}: the imported days are not all there"
    for interval in RESAMPLED:
        bars = stored_bars(data, interval)
        done = {t: v for t, v in truth[interval].items() if opens[0] <= t and v[0] < opens[-1]}
        bad = [t for t, v in done.items() if bars.get((SYMBOL, interval, t)) != v]
        assert not bad, f"seed {seed}: {len(bad)} resampled {interval} bars differ from the exchange's, e.g. {bad[:3]}"
    moments = [s.moment for s in snapshots]
    print(f"{len(snapshots)} kills in {time.monotonic() - started:.1f}s: "
          f"{sum('flush' in m for m in moments)} in a flush, {sum('compaction' in m for m in moments)} in a compaction, "
          f"{sum('import' in m for m in moments)} in an import publish; {len(received)} received 1m bars, "
          f"{len(stored)} stored and equal to the exchange's; {report.files} Parquet files, {report.rows} rows, "
          f"{report.keys} keys, {report.duplicated_keys} keys held twice (resolved by version)")


def caught_up(data: Path, launched: float) -> bool:
    """The service launched at ``launched`` is live, its back-fills done, no gap open."""
    if not started_since(data, launched):
        return False
    counters, gaps = status(data).get("counters", {}), status(data).get("gaps", {})
    return counters.get("backfill_pending") == 0 and counters.get("closed_bars", 0) > 0 and gaps.get("open_1m_bars") == 0
