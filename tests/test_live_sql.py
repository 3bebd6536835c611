"""``klinestore sql`` against a data directory while ``klinestore run --sim`` writes into it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from klinestore import queries
from support import klinestore_command, subprocess_env

SPEED = 60.0  # exchange seconds per second: a 1m bar closes every second
FLUSH_S = 1.0
STATUS_S = 0.25


def status(data_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((data_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def test_sql_sees_bars_within_a_flush_interval_while_the_service_runs(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "storage": {"flush_interval": FLUSH_S},
        "jobs": {"status_interval": STATUS_S},
    }))
    service = subprocess.Popen(
        klinestore_command("run", "--sim", "--sim-speed", str(SPEED), "--config", str(config),
                           "--data-dir", str(data_dir), "--for", "60"),
        env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        lags, seen, deadline = [], 0, time.monotonic() + 45
        while time.monotonic() < deadline and len(lags) < 20:
            time.sleep(0.2)
            assert service.poll() is None, service.stderr.read() if service.stderr else ""
            before = status(data_dir).get("exchange_time_ms")
            if not (data_dir / "bars").exists() or before is None:
                continue
            frame = queries.sql("SELECT count(*) AS n, epoch_ms(max(close_time)) AS newest FROM bars_1m",
                                data_dir=data_dir)
            n, newest = frame.row(0)
            if n:
                assert n >= seen  # the service keeps writing; the reader never sees rows vanish
                seen = n
                lags.append((before - newest) / 1000)  # exchange seconds from the newest visible close to now
        assert len(lags) >= 10, f"bars did not appear in SQL while the service ran ({lags})"
        # A closed bar is flushed within FLUSH_S wall seconds; in exchange time that is FLUSH_S * SPEED,
        # plus the bar still open (60 s) and the status snapshot's own age.
        bound = (FLUSH_S + STATUS_S + 0.5) * SPEED + 60
        assert max(lags[3:]) <= bound, lags
        cli = subprocess.run(
            klinestore_command("sql", "SELECT symbol, count(*) AS n FROM bars_1m GROUP BY 1 ORDER BY 1",
                               "--data-dir", str(data_dir), "--format", "csv"),
            env=subprocess_env(), capture_output=True, text=True, timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.splitlines()[0] == "symbol,n" and cli.stdout.count("USDT") == 2
        flushes = status(data_dir).get("storage", {}).get("flushes", 0)
        time.sleep(3 * FLUSH_S)
        assert service.poll() is None
        assert status(data_dir).get("storage", {}).get("flushes", 0) > flushes  # never blocked by the readers
    finally:
        service.terminate()
        service.wait(timeout=30)
