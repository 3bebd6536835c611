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
