"""klinestore status: fresh, stale, stopped, absent and odd status.json files; the dataset; exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from klinestore.queries.status import EXIT_DEGRADED, EXIT_NOT_RUNNING, EXIT_OK, exit_code, read_status
from klinestore.queries.times import iso
from klinestore.storage.tables import QualityDB
from queries_support import T0, build_dataset
from support import klinestore_command, subprocess_env


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("status") / "data", ("BTCUSDT", "ETHUSDT"), 600)


def snapshot(written_ms: int, **changes: Any) -> dict[str, Any]:
    """A status.json as the service writes it (the ingest engineer's fields)."""
    data: dict[str, Any] = {
        "mode": "websocket_only", "running": True, "written_at": iso(written_ms), "uptime_s": 3600.0,
        "exchange_time_ms": T0 + 600 * 60_000, "symbols": ["BTCUSDT", "ETHUSDT"], "status_interval_s": 5.0,
        "connections": [
            {"id": "market-0", "route": "market", "state": "SUBSCRIBED", "streams": 12, "subscribed": 12,
             "retries": 0, "reconnects": 1, "last_message_age_s": 0.2, "messages": 1000},
            {"id": "public-1", "route": "public", "state": "SUBSCRIBED", "streams": 2, "subscribed": 2,
             "retries": 0, "reconnects": 0, "last_message_age_s": 0.1, "messages": 500},
        ],
        "missing_streams": {},
        "counters": {"messages": 1500, "rejected": {"duplicate": 3}, "reconnects": 1, "closed_bars": 1200},
        "ledger": {"/fapi/v1/depth": {"calls": 2, "weight": 40, "errors": {}}},
        "rest": {"weight_used": 40, "weight_usable": 1800, "banned": 0},
        "warming_up": [{"symbol": "ETHUSDT", "interval": "4h"}],
        "timeframes": {s: {"1m": {"ready": True, "bars": 600}, "4h": {"ready": s == "BTCUSDT", "bars": 2}}
                       for s in ("BTCUSDT", "ETHUSDT")},
        "storage": {"sink": "BarStore", "last_flush": iso(written_ms - 20_000), "pending_bars": 3},
        "jobs": {"dataqual": {"every_s": 30.0, "runs": 12, "failures": 0, "skipped": 0, "last_error": ""},
                 "compaction": {"every_s": 600.0, "runs": 1, "failures": 1, "last_error": "disk full"}},
    }
    data.update(changes)
    return data


def write(data_dir: Path, data: dict[str, Any] | str) -> None:
    (data_dir / "status.json").write_text(data if isinstance(data, str) else json.dumps(data))


def now_ms() -> int:
    return int(time.time() * 1000)


def test_fresh_and_healthy(dataset: Path) -> None:
    write(dataset, snapshot(now_ms() - 2000))
    report = read_status(dataset)
    assert report["service"]["state"] == "running" and report["alerts"] == []
    assert exit_code(report) == EXIT_OK
    assert report["streams"] == {"total": 14, "subscribed": 14, "missing": {}, "missing_count": 0}
    assert report["storage"]["last_flush_age_s"] == pytest.approx(22, abs=2)
    assert report["storage"]["pending_bars"] == 3
    by_interval = {r["interval"]: r for r in report["dataset"]}
    assert set(by_interval) == {"1m", "5m", "15m", "1h", "4h"}
    assert by_interval["1m"]["symbols"] == 2 and by_interval["1m"]["newest_open_time"] == "2024-01-01T09:59:00Z"
    assert by_interval["1m"]["newest_age_s"] == 60.0  # against the exchange clock in the snapshot
    assert (by_interval["1m"]["partitions"], by_interval["1m"]["partitioned_by"]) == (1, "month")
    assert (by_interval["1h"]["partitions"], by_interval["1h"]["partitioned_by"]) == (1, "year")  # 1h and longer


def test_missing_streams_failed_connections_and_low_dataqual_alert(dataset: Path) -> None:
    data = snapshot(now_ms(), missing_streams={"ETHUSDT": ["ethusdt@kline_1m"]},
                    dataqual={"BTCUSDT": {"score": 0.99}, "ETHUSDT": {"score": 0.7, "reasons": "1 missing stream"}},
                    alerts=[{"level": "warning", "message": "reconnects above 5 per hour"}, "plain text alert"])
    data["connections"][1]["state"] = "FAILED"
    write(dataset, data)
    report = read_status(dataset)
    messages = [a["message"] for a in report["alerts"]]
    assert report["alerts"][0] == {"level": "error", "message": "connection public-1 is FAILED (retries 0)"}
    assert "1 stream(s) silent: ethusdt@kline_1m" in messages
    assert "DataQual ETHUSDT 0.70 < 0.9: 1 missing stream" in messages
    assert {"reconnects above 5 per hour", "plain text alert"} <= set(messages)
    assert [r["source"] for r in report["dataqual"]] == ["status.json", "status.json"]
    assert exit_code(report) == EXIT_DEGRADED


def test_stale_stopped_absent_unreadable(dataset: Path, tmp_path: Path) -> None:
    write(dataset, snapshot(now_ms() - 60_000))
    stale = read_status(dataset)
    assert stale["service"]["state"] == "stale" and "service not running?" in stale["service"]["message"]
    assert stale["connections"] == [] and exit_code(stale) == EXIT_NOT_RUNNING
    write(dataset, snapshot(now_ms() - 60_000, running=False))
    stopped = read_status(dataset)
    assert stopped["service"]["state"] == "stopped" and exit_code(stopped) == EXIT_NOT_RUNNING
    write(dataset, "{ torn")
    assert read_status(dataset)["service"]["state"] == "unreadable"
    (dataset / "status.json").unlink()
    absent = read_status(dataset)
    assert absent["service"]["state"] == "absent" and "no service has run" in absent["alerts"][0]["message"]
    assert absent["dataset"] and exit_code(absent) == EXIT_NOT_RUNNING
    empty = read_status(tmp_path)
    assert empty["dataset"] == [] and empty["storage"]["wal"] == {"segments": 0, "bytes": 0}


def test_tolerates_minimal_and_odd_fields(tmp_path: Path) -> None:
    write(tmp_path, {"mode": "fallback", "written_at": iso(now_ms()), "connections": "?", "counters": None,
                     "storage": {"last_flush": time.time() - 5}, "future_field": {"x": 1}})
    report = read_status(tmp_path)
    assert report["service"]["state"] == "running" and report["connections"] == []
    assert report["storage"]["last_flush_age_s"] == pytest.approx(5, abs=2)
    assert report["status_json"]["future_field"] == {"x": 1}


def test_dataqual_from_published_tables(tmp_path: Path) -> None:
    with QualityDB(tmp_path) as db:
        db.insert_dataqual([(T0, "BTCUSDT", 0.8, 1, 0, 0, "old"), (T0 + 60_000, "BTCUSDT", 0.95, 0, 0, 0, "")])
        db.publish()
    rows = read_status(tmp_path)["dataqual"]
    assert [(r["symbol"], r["score"], r["ts"], r["source"]) for r in rows] == [
        ("BTCUSDT", 0.95, "2024-01-01T00:01:00Z", "tables")]


def test_cli_table_and_json(dataset: Path) -> None:
    write(dataset, snapshot(now_ms()))
    table = subprocess.run(klinestore_command("status", "--data-dir", str(dataset)), env=subprocess_env(),
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == EXIT_OK, table.stderr
    for words in ("RUNNING", "market-0", "SUBSCRIBED", "timeframes", "warming", "REST API ledger", "/fapi/v1/depth",
                  "2024-01-01 09:59", "last flush", "compaction", "disk full"):
        assert words in table.stdout
    write(dataset, snapshot(now_ms() - 600_000))
    as_json = subprocess.run(klinestore_command("status", "--data-dir", str(dataset), "--json"),
                             env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert as_json.returncode == EXIT_NOT_RUNNING
    report = json.loads(as_json.stdout)
    assert report["service"]["state"] == "stale" and report["alerts"][0]["level"] == "error"
    assert report["status_json"]["mode"] == "websocket_only"


def test_sharded_data_directory_reports_every_shard_and_one_on_request(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "status-s0000.json").write_text(json.dumps(snapshot(now_ms(), symbols=["BTCUSDT"])))
    (data / "status-s0001.json").write_text(json.dumps(snapshot(now_ms() - 600_000, symbols=["ETHUSDT"])))

    both = subprocess.run(klinestore_command("status", "--data-dir", str(data), "--json"), env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)
    shards = json.loads(both.stdout)["shards"]
    assert {k: r["service"]["state"] for k, r in shards.items()} == {"0": "running", "1": "stale"}
    assert both.returncode == EXIT_NOT_RUNNING  # the worst shard decides
    assert "status-s0001.json was written" in shards["1"]["service"]["message"]

    one = subprocess.run(klinestore_command("status", "--data-dir", str(data), "--shard", "0", "--json"),
                         env=subprocess_env(), capture_output=True, text=True, timeout=60)
    report = json.loads(one.stdout)
    assert one.returncode == EXIT_OK and report["shard"] == 0 and report["service"]["symbols"] == ["BTCUSDT"]

    table = subprocess.run(klinestore_command("status", "--data-dir", str(data)), env=subprocess_env(),
                           capture_output=True, text=True, timeout=60)
    assert "shard 0" in table.stdout and "shard 1" in table.stdout and "RUNNING" in table.stdout


def test_a_dead_pid_on_this_host_means_stopped(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    write(tmp_path, snapshot(now_ms(), pid=gone.pid, host=host))
    report = read_status(tmp_path)
    assert report["service"]["state"] == "stopped" and exit_code(report) == EXIT_NOT_RUNNING
    assert f"pid {gone.pid}" in report["service"]["message"] and "last snapshot was written at" in report["service"]["message"]
    write(tmp_path, snapshot(now_ms(), pid=os.getpid(), host=host))
    assert read_status(tmp_path)["service"]["state"] == "running"
    write(tmp_path, snapshot(now_ms(), pid=gone.pid, host=host + "-elsewhere"))  # another machine's pid: cannot tell
    assert read_status(tmp_path)["service"]["state"] == "running"


def test_market_spot_shows_the_spot_dataset(shared_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run(klinestore_command("import", str(shared_data / "spot/klines/BTCUSDT/1m"), "--market", "spot",
                                      "--data-dir", str(data)), env=subprocess_env(), check=True, capture_output=True,
                   timeout=120)

    def dataset_of(*market: str) -> list[dict[str, Any]]:
        shown = subprocess.run(klinestore_command("status", "--data-dir", str(data), "--json", *market),
                               env=subprocess_env(), capture_output=True, text=True, timeout=60)
        assert shown.returncode == EXIT_NOT_RUNNING, shown.stderr
        return json.loads(shown.stdout)["dataset"]

    assert dataset_of() == []
    spot = {r["interval"]: r for r in dataset_of("--market", "spot")}
    assert set(spot) == {"1m", "5m", "15m", "1h", "4h"} and spot["1m"]["newest_open_time"] == "2023-01-07T23:59:00Z"
    table = subprocess.run(klinestore_command("status", "--data-dir", str(data), "--market", "spot"),
                           env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert "storage (spot dataset)" in table.stdout and "2023-01-07 23:59" in table.stdout
