"""Dataset: one object owns a market's bars on disk; other packages use it and storage's package surface."""

from __future__ import annotations

import ast
from pathlib import Path

import duckdb
import pytest

from klinestore.config import StorageConfig
from klinestore.storage import Dataset, StorageError, read_bars
from klinestore.storage.store import BarStore
from storage_support import T0, bar

ROOT = Path(__file__).resolve().parents[1]
#: Storage subsystems with their own commands or tables, which other packages may import directly.
SUBSYSTEMS = {"config", "errors", "tables", "fsguard", "status", "maintenance", "objectstore"}


def test_a_dataset_reads_deduplicated_bars_and_lists_its_partitions(tmp_path: Path) -> None:
    with BarStore(tmp_path, StorageConfig(resample_intervals=("5m",))) as store:
        store.append([bar(minute=m, price=100.0 + m) for m in range(10)])
        store.flush()
        store.append([bar(minute=3, price=500.0)])  # a correction in a second file
        store.flush()
    usdm = Dataset(tmp_path)
    got = usdm.read("BTCUSDT", "1m", T0, T0 + 10 * 60_000)
    assert got.equals(read_bars(tmp_path, "BTCUSDT", "1m", T0, T0 + 10 * 60_000))
    assert got.height == 10 and got.row(3, named=True)["open"] == 500.0
    assert usdm.intervals() == ["1m", "5m"]
    [(interval, month, files)] = [(p.interval, p.month, p.files()) for p in usdm.partitions("1m")]
    assert (interval, month, len(files)) == ("1m", "2024-01", 2) and all(f.suffix == ".parquet" for f in files)
    with duckdb.connect() as con:
        assert con.execute(f"SELECT count(*), max(open) FROM ({usdm.relation_sql('1m')})").fetchall() == [(10, 500.0)]
    assert Dataset(tmp_path, "spot").partitions() == [] and Dataset(tmp_path, "spot").intervals() == []
    with pytest.raises(StorageError, match="unknown market"):
        Dataset(tmp_path, "coinm")


def test_other_packages_reach_the_dataset_only_through_the_storage_package() -> None:
    """No layer above storage imports the modules behind the dataset contract."""
    offenders = []
    for folder in ("ingest", "queries", "jobs", "klinestore"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                for name in names:
                    parts = name.split(".")
                    if parts[:2] == ["klinestore", "storage"] and len(parts) > 2 and parts[2] not in SUBSYSTEMS:
                        offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []
