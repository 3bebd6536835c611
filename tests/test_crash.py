"""SIGKILL during flush, compaction and import, then restart: no corrupt file, no lost or duplicated row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from klinestore.config import StorageConfig
from klinestore.storage.importer import import_archives
from klinestore.storage.layout import GLOB, dataset_root
from klinestore.storage.maintenance import compact_all
from klinestore.storage.store import BarStore
from storage_support import MINUTE, T0, bar, kline_csv, sql_rows, write_zip
from support import subprocess_env

CHILD = Path(__file__).with_name("crash_child.py")
CONFIG = StorageConfig(compaction_min_files=3, compaction_grace=0.0, wal_fsync_window=0.05)


def run_and_kill(*args: str) -> str:
    """Run the child until it freezes at its hook (then SIGKILL it) or finishes; return which."""
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(CHILD.parent), subprocess_env()["PYTHONPATH"]]))
    child = subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, env=env, text=True)
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if line == "frozen":
        child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    return line


def assert_readable(data_dir: Path) -> None:
    """Every published file opens in DuckDB and Polars, with no tmp file matching the glob."""
    glob = str(dataset_root(data_dir) / GLOB)
    if not list(dataset_root(data_dir).glob(GLOB)):
        return
    with duckdb.connect() as con:
        con.sql(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()
    pl.scan_parquet(glob, hive_partitioning=True).select(pl.len()).collect()


def keys(data_dir: Path, interval: str) -> list[tuple[str, int]]:
    rows = sql_rows(data_dir, f"interval = '{interval}'").with_columns(pl.col("open_time").dt.epoch("ms"))
    return sorted(rows.select("symbol", "open_time").iter_rows())


def expected_1m(minutes: range) -> list[tuple[str, int]]:
    return sorted((s, T0 + i * MINUTE) for i in minutes for s in ("BTCUSDT", "ETHUSDT"))


@pytest.mark.parametrize(("hook", "nth"), [("replace", 1), ("replace", 2), ("replace", 4), ("unlink", 1)])
def test_kill_during_flush(tmp_path: Path, hook: str, nth: int) -> None:
    with BarStore(tmp_path, CONFIG) as store:
        store.append([bar(s, i) for i in range(100) for s in ("BTCUSDT", "ETHUSDT")])
    assert run_and_kill("flush", str(tmp_path), hook, str(nth)) == "frozen"
    assert_readable(tmp_path)
    with BarStore(tmp_path, CONFIG) as store:
        store.flush()
    assert_readable(tmp_path)
    assert keys(tmp_path, "1m") == expected_1m(range(130))
    assert len(keys(tmp_path, "5m")) == 2 * 26


@pytest.mark.parametrize(("hook", "nth"), [("replace", 1), ("replace", 2), ("unlink", 1), ("unlink", 7)])
def test_kill_during_compaction(tmp_path: Path, hook: str, nth: int) -> None:
    with BarStore(tmp_path, CONFIG) as store:
        for i in range(12):
            store.append([bar(s, i) for s in ("BTCUSDT", "ETHUSDT")])
            store.flush()
    before = sql_rows(tmp_path).sort("interval", "symbol", "open_time")
    assert run_and_kill("compact", str(tmp_path), hook, str(nth)) == "frozen"
    assert_readable(tmp_path)
    assert sql_rows(tmp_path).sort("interval", "symbol", "open_time").equals(before)  # even before recovery
    with BarStore(tmp_path, CONFIG) as store:
        store.compact()
    assert_readable(tmp_path)
    assert sql_rows(tmp_path).sort("interval", "symbol", "open_time").equals(before)


@pytest.mark.parametrize(("hook", "nth"), [("replace", 1), ("replace", 2), ("replace", 5)])
def test_kill_during_import(tmp_path: Path, hook: str, nth: int) -> None:
    archives = [str(write_zip(tmp_path / f"{s}-1m-2024-01-01.zip", kline_csv(minutes=120))) for s in ("BTCUSDT", "ETHUSDT")]
    data = tmp_path / "data"
    assert run_and_kill("import", str(data), hook, str(nth), *archives) == "frozen"
    assert_readable(data)
    compact_all(data, CONFIG)  # recovery: the publish is finished or undone, never half there
    one_minute = keys(data, "1m") if dataset_root(data).exists() else []
    assert one_minute in ([], expected_1m(range(120)))
    import_archives([Path(a) for a in archives], data, CONFIG)
    assert_readable(data)
    assert keys(data, "1m") == expected_1m(range(120)) and len(keys(data, "1h")) == 4
