"""The service's DuckDB tables: fixed columns, and published Parquet other processes can read."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from klinestore.storage.tables import TABLE_COLUMNS, QualityDB, empty_select, published_glob

DAY = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000


def read(glob: str) -> pl.DataFrame:
    return duckdb.connect().sql(f"SELECT * FROM read_parquet('{glob}') ORDER BY ALL").pl()


def test_tables_have_the_fixed_columns(tmp_path: Path) -> None:
    with QualityDB(tmp_path) as db:
        for table, cols in TABLE_COLUMNS.items():
            got = db.query(f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' ORDER BY ordinal_position")
            assert [r[0] for r in got] == [c for c, _ in cols]
    assert [c for c, _ in TABLE_COLUMNS["dataqual"]] == ["ts", "symbol", "score", "missing_streams", "mismatches", "gaps", "reasons"]
    assert [c for c, _ in TABLE_COLUMNS["gaps"]] == ["symbol", "interval", "start_time", "end_time", "detected_at", "filled_at", "reason"]
    assert [c for c, _ in TABLE_COLUMNS["api_calls"]] == ["minute", "endpoint", "calls", "weight"]


def test_publish_is_readable_while_the_owner_holds_the_database(tmp_path: Path) -> None:
    with QualityDB(tmp_path) as db:
        db.insert_dataqual([(DAY + 1000, "BTCUSDT", 0.9, 1, 0, 0, "1 stream missing"), (DAY + 86_400_000, "BTCUSDT", 1.0, 0, 0, 0, "ok")])
        db.insert_reconciliations([(DAY, "BTCUSDT", "1m", DAY - 60_000, "close", 1.0, 1.1, "rest", "replaced")])
        db.insert_connection_events([(DAY, "market-0", "CONNECTED", "SUBSCRIBED", "ack")])
        db.add_api_calls([(DAY, "/fapi/v1/depth", 1, 20), (DAY, "/fapi/v1/depth", 2, 40)])
        written = db.publish()
        assert {p.parent.name for p in written} == set(TABLE_COLUMNS)  # gaps too: empty, but there
        assert read(published_glob(tmp_path, "gaps")).columns == [c for c, _ in TABLE_COLUMNS["gaps"]]
        assert sorted(p.name for p in (tmp_path / "tables/dataqual").iterdir()) == ["day=2023-11-14.parquet", "day=2023-11-15.parquet"]
        # another process (here: another connection) reads while the service holds the file
        rows = read(published_glob(tmp_path, "dataqual"))
        assert rows.select("symbol", "score").rows() == [("BTCUSDT", 0.9), ("BTCUSDT", 1.0)]
        assert rows["ts"].dt.epoch("ms").to_list() == [DAY + 1000, DAY + 86_400_000]
        assert read(published_glob(tmp_path, "api_calls")).select("calls", "weight").rows() == [(3, 60)]
        assert db.publish() == []  # nothing changed, nothing rewritten
        assert not list(tmp_path.glob("tables/**/.*.tmp"))


def test_gaps_open_extend_and_fill(tmp_path: Path) -> None:
    with QualityDB(tmp_path) as db:
        assert db.open_gap("BTCUSDT", "1m", DAY, DAY + 120_000, DAY + 200_000, "reconnect")
        assert not db.open_gap("BTCUSDT", "1m", DAY, DAY + 180_000, DAY + 250_000, "reconnect")
        assert db.open_gaps() == [("BTCUSDT", "1m", DAY, DAY + 180_000, DAY + 200_000, "reconnect")]
        db.fill_gap("BTCUSDT", "1m", DAY, DAY + 999_000)
        assert db.open_gaps() == []
        db.publish()
        frame = pl.read_parquet(published_glob(tmp_path, "gaps"))
        assert frame["filled_at"].dt.epoch("ms").to_list() == [DAY + 999_000]


def test_empty_select_has_typed_columns() -> None:
    con = duckdb.connect()
    rel = con.sql(empty_select("reconciliations"))
    assert rel.columns == [c for c, _ in TABLE_COLUMNS["reconciliations"]]
    assert rel.fetchall() == []


def test_database_survives_reopen(tmp_path: Path) -> None:
    with QualityDB(tmp_path) as db:
        db.insert_dataqual([(DAY, "ETHUSDT", 0.8, 2, 0, 0, "x")])
    with QualityDB(tmp_path) as db:
        assert db.query("SELECT symbol, score FROM dataqual") == [("ETHUSDT", 0.8)]


def test_shards_own_their_database_and_publish_side_by_side(tmp_path: Path) -> None:
    with QualityDB(tmp_path) as first, QualityDB(tmp_path, shard_id=1) as second:
        assert first.path.name == "dataqual.duckdb" and second.path.name == "dataqual-s0001.duckdb"
        first.insert_dataqual([(DAY, "BTCUSDT", 1.0, 0, 0, 0, "ok")])
        second.insert_dataqual([(DAY, "ETHUSDT", 0.9, 1, 0, 0, "1 stream missing")])
        second.open_gap("ETHUSDT", "1m", DAY, DAY, DAY, "reconnect")
        first.publish()
        second.publish()
    assert sorted(p.name for p in (tmp_path / "tables/dataqual").iterdir()) == [
        "day=2023-11-14-s0001.parquet", "day=2023-11-14.parquet"]
    assert read(published_glob(tmp_path, "dataqual")).select("symbol", "score").rows() == [("BTCUSDT", 1.0), ("ETHUSDT", 0.9)]
    assert read(published_glob(tmp_path, "gaps"))["symbol"].to_list() == ["ETHUSDT"]


def test_the_service_side_of_the_tables_never_loads_pandas(tmp_path: Path) -> None:
    """pyarrow imports pandas (if installed) on its first list conversion: ~50 MB of RSS in
    the ingest process for nothing (issue 12). The service's writes go through polars."""
    import subprocess
    import sys

    script = f"""
import sys
import klinestore.commands.run, klinestore.service
from klinestore.storage.tables import QualityDB
with QualityDB({str(tmp_path)!r}) as db:
    db.insert_dataqual([({DAY} + 1000, "BTCUSDT", 0.9, 1, 0, 0, "1 stream missing")])
    db.insert_connection_events([({DAY}, "market-0", "CONNECTED", "SUBSCRIBED", "ack")])
    db.add_api_calls([({DAY}, "/fapi/v1/depth", 1, 20)])
    db.publish()
print(sorted(m for m in ("pandas", "matplotlib") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
