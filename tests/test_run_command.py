"""``klinestore run`` as a user runs it: a subprocess against the bundled simulator."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import klinestore_command, subprocess_env

FAST_CONFIG = {
    "symbols": ["BTCUSDT", "ETHUSDT"],
    "websocket": {"heartbeat": {"check_interval": 0.5, "timeout": 3}},
    "jobs": {"status_interval": 0.5},
}


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(FAST_CONFIG))
    return path


def test_run_sim_for_seconds_writes_status_and_exits_zero(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.run(
        klinestore_command("run", "--sim", "--for", "4", "--data-dir", str(data), "--config", str(write_config(tmp_path)),
                           "--symbols", "BTCUSDT", "--sim-start", "2024-01-01T00:10Z"),
        env=subprocess_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads((data / "status.json").read_text())
    assert status["mode"] == "websocket_only" and status["running"] is False
    assert status["symbols"] == ["BTCUSDT"]
    assert {c["id"] for c in status["connections"]} == {"market-0", "public-1"}
    for conn in status["connections"]:
        assert {"id", "state", "streams", "retries", "last_message_age_s"} <= set(conn)
        assert conn["state"] == "DISCONNECTED" and conn["streams"] > 0
    counters = status["counters"]
    assert counters["messages"] > 100 and counters["closed_bars"] >= 3 and counters["reconnects"] == 0
    assert counters["rejected"] == {}
    assert status["missing_streams"] == {}
    assert status["ledger"]["/fapi/v1/depth"]["calls"] == 1 and "/fapi/v1/klines" not in status["ledger"]
    assert {"symbol": "BTCUSDT", "interval": "4h"} in status["warming_up"]  # 00:10 + 4 min: no 4h bar closed
    assert status["exchange_time_ms"] < 1_704_068_400_000  # the simulated clock started at --sim-start
    # The last status is written after the stop, when the next 1m bar may be due (60x): count, not readiness.
    assert status["timeframes"]["BTCUSDT"]["1m"]["bars"] >= 3
    assert status["books_in_sync"] == 1 and status["clock"]["synced"]


def test_sigterm_stops_cleanly_with_a_final_status(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        klinestore_command("run", "--sim", "--data-dir", str(data), "--config", str(write_config(tmp_path))),
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        status_file = data / "status.json"
        while time.monotonic() < deadline:
            if status_file.exists() and json.loads(status_file.read_text())["counters"]["closed_bars"] >= 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail("no closed bars in status.json")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    final = json.loads(status_file.read_text())
    assert final["running"] is False and all(c["state"] == "DISCONNECTED" for c in final["connections"])


def test_status_after_kill_9_reports_the_service_stopped_with_its_last_snapshot(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        klinestore_command("run", "--sim", "--data-dir", str(data), "--config", str(write_config(tmp_path))),
        env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    status_file = data / "status.json"
    try:
        deadline = time.monotonic() + 30
        while not status_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status_file.exists(), "no status.json within 30 s"
        running = subprocess.run(klinestore_command("status", "--data-dir", str(data), "--json"),
                                 env=subprocess_env(), capture_output=True, text=True, timeout=60)
        assert json.loads(running.stdout)["service"]["state"] == "running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    last = json.loads(status_file.read_text())
    assert last["running"] is True and last["pid"] == proc.pid  # killed: no final snapshot was written
    after = subprocess.run(klinestore_command("status", "--data-dir", str(data)), env=subprocess_env(),
                           capture_output=True, text=True, timeout=60)
    assert after.returncode == 3, after.stdout[-2000:]
    assert "STOPPED" in after.stdout.upper() and f"pid {proc.pid}" in after.stdout
    assert last["written_at"] in after.stdout.replace("\n", "")


def run_sim(tmp_path: Path, data: Path, *extra: str, seconds: str = "4") -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        klinestore_command("run", "--sim", "--for", seconds, "--data-dir", str(data), "--config",
                           str(write_config(tmp_path)), "--symbols", "BTCUSDT", "--progress", "1", *extra),
        env=subprocess_env(), capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def stored_1m(data: Path) -> dict[str, object]:
    listed = subprocess.run(klinestore_command("list", "--data-dir", str(data), "--interval", "1m", "--format", "json"),
                            env=subprocess_env(), capture_output=True, text=True, timeout=60)
    rows = json.loads(listed.stdout)
    assert len(rows) == 1, listed
    return rows[0]


def test_a_second_demo_continues_after_the_stored_bars_with_progress_and_a_summary(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = run_sim(tmp_path, data)
    assert "progress: connections 2/2 subscribed" in first.stderr and "bars stored" in first.stderr
    assert first.stdout.startswith("klinestore run: ") and "closed bars stored" in first.stdout
    before = stored_1m(data)
    assert f"BTCUSDT      1m   {before['first'][:19]}" in first.stdout
    second = run_sim(tmp_path, data)
    assert "the simulator starts after them" in second.stderr
    after = stored_1m(data)
    assert after["first"] == before["first"] and after["last"] > before["last"] and after["missing"] == 0
    assert "rejected as stale" not in second.stderr and "updates rejected" not in second.stdout
    assert "missing: no bar between the first and the last stored ones" in second.stdout


def test_stale_rejects_in_bulk_are_logged_once_with_count_and_cause(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_sim(tmp_path, data, "--sim-start", "2024-01-01T01:00Z")
    behind = run_sim(tmp_path, data, "--sim-start", "2024-01-01T00:00Z")  # an hour behind the stored bars
    warnings = [line for line in behind.stderr.splitlines() if "rejected as stale" in line and "WARNING" in line]
    assert len(warnings) == 1, behind.stderr[-3000:]
    assert "updates of bars older than the newest one already held" in warnings[0]
    assert int(warnings[0].split("WARNING")[1].split()[1].replace(",", "")) >= 100
    assert "updates rejected" in behind.stdout


def test_no_route_to_the_exchange_logs_one_error_naming_the_url_and_what_to_check(tmp_path: Path) -> None:
    config = tmp_path / "noroute.json"
    config.write_text(json.dumps({"symbols": ["BTCUSDT"], "rest": {"max_retries": 0},
                                  "websocket": {"reconnect": {"base_delay": 0.1, "max_delay": 0.5}}}))
    proc = subprocess.run(
        klinestore_command("run", "--for", "4", "--data-dir", str(tmp_path / "data"), "--config", str(config),
                           "--ws-url", "ws://127.0.0.1:1", "--rest-url", "http://127.0.0.1:1"),
        env=subprocess_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "cannot reach the exchange at ws://127.0.0.1:1" in errors[0] and "Connect call failed" in errors[0]
    assert "proxy" in errors[0] and "--sim" in errors[0] and "retrying with backoff" in errors[0]
    retries = [line for line in proc.stderr.splitlines() if "CONNECTING -> RECONNECTING" in line]
    assert len(retries) >= 3  # it kept retrying after the ERROR


def test_archive_fill_closes_a_gap_from_the_simulators_archive_host(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_sim(tmp_path, data, "--sim-start", "2024-01-01T23:50Z", seconds="3")
    config = tmp_path / "fill.json"
    config.write_text(json.dumps({**FAST_CONFIG, "jobs": {"status_interval": 0.5, "archive_fill": True,
                                                          "archive_fill_interval": 1, "gap_check_interval": 1}}))
    proc = subprocess.run(
        klinestore_command("run", "--sim", "--for", "6", "--data-dir", str(data), "--config", str(config),
                           "--symbols", "BTCUSDT", "--sim-start", "2024-01-02T00:30Z"),
        env=subprocess_env(), capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "archive_fill: imported 1 daily archives" in proc.stderr
    row = stored_1m(data)
    assert row["first"] == "2024-01-01T00:00:00Z"  # the whole day of 2024-01-01 came from the archive
    assert row["missing"] == 30  # 2024-01-02 00:00..00:29: that day is not over, its archive not published
    status = json.loads((data / "status.json").read_text())
    assert status["archive_fill"]["imported_files"] == 1 and "/fapi/v1/klines" not in status["ledger"]


def test_a_max_connections_the_streams_cannot_fit_is_a_one_line_error_before_any_io(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"websocket": {"connection_pool": {"max_connections": 2}}}))
    symbols = ",".join(f"S{i:03d}USDT" for i in range(200))  # 1600 streams: at least 3 connections
    proc = subprocess.run(
        klinestore_command("run", "--config", str(config), "--symbols", symbols, "--data-dir", str(tmp_path / "data"),
                           "--ws-url", "ws://127.0.0.1:1", "--rest-url", "http://127.0.0.1:1", "--for", "5"),
        env=subprocess_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "websocket.connection_pool.max_connections is 2" in errors[0]
    assert "server time unavailable" not in proc.stderr  # refused before any request
