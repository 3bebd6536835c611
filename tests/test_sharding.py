"""Ingest sharded by symbol: two ``klinestore run`` processes write one dataset, SQL sees both.

Each shard subscribes only the symbols that hash to it (``klinestore.ingest.listings.shard_of``) and
writes only files named after its writer (``s0000``, ``s0001``), with its own WAL, lock and
status file; a second process for a shard that is already running is refused.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from klinestore.ingest.listings import shard_of
from klinestore.storage.layout import shard_writer
from simfixtures import START_MS, SimFactory
from support import klinestore_command, subprocess_env

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT")
SHARDS = 2
FIELDS = ("open", "high", "low", "close", "volume", "close_ms", "quote_volume", "trades", "taker_buy_volume",
          "taker_buy_quote_volume")


def shard_config(tmp_path: Path, shard: int) -> Path:
    path = tmp_path / f"shard{shard}.json"
    path.write_text(json.dumps({
        "symbols": list(SYMBOLS),
        "sharding": {"shard_id": shard, "num_shards": SHARDS},
        "websocket": {"streams": {"kline_intervals": ["1m", "5m"], "aggtrade": False, "depth": False,
                                  "mark_price": False}},
        "storage": {"flush_interval": 0.5},
        "jobs": {"status_interval": 0.3},
    }))
    return path


def sql(data: Path, query: str) -> list[dict[str, Any]]:
    proc = subprocess.run(klinestore_command("sql", query, "--data-dir", str(data), "--format", "json"),
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wait_for_bars(status_files: list[Path], procs: list[subprocess.Popen[str]], minutes: int, fives: int) -> None:
    """Until every shard's status shows, for each of its symbols, this many closed 1m and 5m bars."""
    def enough(path: Path) -> bool:
        frames = json.loads(path.read_text())["timeframes"]
        return bool(frames) and all(t["1m"]["bars"] >= minutes and t["5m"]["bars"] >= fives for t in frames.values())

    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
        try:
            if all(enough(f) for f in status_files):
                return
        except (OSError, ValueError, KeyError):
            pass  # not written yet
        time.sleep(0.1)
    raise AssertionError(f"the shards did not close {minutes} 1m and {fives} 5m bars per symbol within 40 s")


def test_two_shard_processes_write_one_dataset_that_sql_sees_whole(tmp_path: Path, sim_factory: SimFactory) -> None:
    owner = {s: shard_of(s, SHARDS) for s in SYMBOLS}
    assert set(owner.values()) == {0, 1}  # both shards have work
    sim = sim_factory(symbols=SYMBOLS, speed=120, seed=7, start_ms=START_MS)
    data = tmp_path / "data"
    argv = ["--data-dir", str(data), "--ws-url", sim.ws_url, "--rest-url", sim.rest_url]
    procs = [
        subprocess.Popen(klinestore_command("run", "--config", str(shard_config(tmp_path, n)), *argv),
                         env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(SHARDS)
    ]
    try:
        status_files = [data / f"status-{shard_writer(n)}.json" for n in range(SHARDS)]
        wait_for_bars(status_files, procs, 1, 0)
        twin = subprocess.run(klinestore_command("run", "--config", str(shard_config(tmp_path, 1)), "--for", "5", *argv),
                              env=subprocess_env(), capture_output=True, text=True, timeout=60)
        wait_for_bars(status_files, procs, 3, 1)
        for p in procs:
            p.send_signal(signal.SIGTERM)  # a clean stop: the last flush, then exit 0
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    assert twin.returncode == 1
    assert f"shard s0001 of {data} is open in another process (pid {procs[1].pid})" in twin.stderr

    for n, path in enumerate(status_files):  # each shard subscribed only its own symbols
        assert json.loads(path.read_text())["symbols"] == sorted(s for s in SYMBOLS if owner[s] == n)
    assert not (data / "status.json").exists()
    # each shard's writers: its klines (s) and its futures series (m mark, x index, f funding)
    assert sorted(p.name for p in (data / "state").glob("*.lock")) == sorted(
        f"{letter}{n:04d}.lock" for letter in "fmsx" for n in range(SHARDS))
    assert sorted(p.name for p in (data / "wal").iterdir()) == sorted(
        f"{letter}{n:04d}" for letter in "fmsx" for n in range(SHARDS))

    files = f"read_parquet('{data}/bars/*/*/*.parquet', filename = true, hive_partitioning = true)"
    writers = sql(data, f"SELECT DISTINCT symbol, regexp_extract(filename, '-(s[0-9]{{4}})-g', 1) AS writer FROM {files}")
    assert sorted((r["symbol"], r["writer"]) for r in writers) == sorted((s, shard_writer(owner[s])) for s in SYMBOLS)
    shared = sql(data, f"SELECT symbol, interval, open_time FROM {files} GROUP BY ALL "
                       "HAVING count(DISTINCT regexp_extract(filename, '-(s[0-9]{4})-g', 1)) > 1")
    assert shared == []  # no key was ever written by both shards

    bars = sql(data, "SELECT symbol, interval, epoch_ms(open_time) AS open_ms, epoch_ms(close_time) AS close_ms, "
                     "open, high, low, close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, "
                     "is_complete, source FROM bars ORDER BY symbol, interval, open_ms")
    keys = [(b["symbol"], b["interval"], b["open_ms"]) for b in bars]
    assert len(keys) == len(set(keys))
    assert {b["symbol"] for b in bars} == set(SYMBOLS)
    for symbol in SYMBOLS:
        minutes = [b for b in bars if b["symbol"] == symbol and b["interval"] == "1m"]
        assert len(minutes) >= 3 and all(b["source"] == "ws" for b in minutes)
        opens = [b["open_ms"] for b in minutes]
        assert opens == list(range(opens[0], opens[-1] + 60_000, 60_000))  # contiguous
        assert any(b["source"] == "ws" for b in bars if b["symbol"] == symbol and b["interval"] == "5m")
        for interval in ("1m", "5m"):
            truth = {row[0]: row for row in sim.truth(symbol, interval)}
            for b in (b for b in bars if b["symbol"] == symbol and b["interval"] == interval and b["is_complete"]):
                row = truth[b["open_ms"]]
                expected = [float(row[i]) for i in (1, 2, 3, 4, 5)] + [row[6], float(row[7]), row[8], float(row[9]),
                                                                       float(row[10])]
                assert [b[f] for f in FIELDS] == expected, (symbol, interval, b["open_ms"])
