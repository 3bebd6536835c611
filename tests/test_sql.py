"""klinestore sql: views, output formats, one-line errors, and the read-only session."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import duckdb
import polars as pl
import pytest

from klinestore.queries.errors import SqlError
from klinestore.queries.output import to_text, write_result
from klinestore.queries.sql import connect, execute
from klinestore.storage.reader import read_bars
from klinestore.storage.tables import TABLE_COLUMNS, QualityDB
from queries_support import T0, build_dataset
from support import klinestore_command, subprocess_env


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("sql") / "data", ("BTCUSDT", "ETHUSDT"), 1440)


def sql(data_dir: Path, query: str) -> pl.DataFrame:
    con = connect(data_dir)
    try:
        return pl.from_arrow(execute(con, query).read_all())  # type: ignore[return-value]
    finally:
        con.close()


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(klinestore_command("sql", *args), env=subprocess_env(), capture_output=True, text=True,
                          input=stdin, timeout=60)


def test_views_and_columns(dataset: Path) -> None:
    tables = set(sql(dataset, "SHOW TABLES").get_column("name"))
    assert {"bars", "bars_1m", "bars_5m", "bars_15m", "bars_1h", "bars_4h", *TABLE_COLUMNS} <= tables
    frame = sql(dataset, "SELECT * FROM bars_1m WHERE symbol = 'BTCUSDT' ORDER BY open_time")
    assert frame.columns == [
        "symbol", "interval", "open_time", "close_time", "open", "high", "low", "close", "volume", "quote_volume",
        "trades", "taker_buy_volume", "taker_buy_quote_volume", "is_complete", "source",
    ]
    assert frame.schema["open_time"] == pl.Datetime("us", "UTC")
    stored = read_bars(dataset, "BTCUSDT", "1m")
    assert frame.height == stored.height == 1440
    assert frame.with_columns(pl.col("open_time", "close_time").cast(pl.Datetime("ms", "UTC"))).equals(stored)
    counts = dict(sql(dataset, "SELECT interval, count(*) FROM bars GROUP BY 1").iter_rows())
    assert counts == {"1m": 2880, "5m": 576, "15m": 192, "1h": 48, "4h": 12}


def test_every_default_interval_and_table_view_exists_when_empty(tmp_path: Path) -> None:
    for view in ("bars", "bars_1m", "bars_5m", "bars_15m", "bars_1h", "bars_4h"):
        assert sql(tmp_path, f"SELECT * FROM {view}").height == 0
    for table, columns in TABLE_COLUMNS.items():
        frame = sql(tmp_path, f"SELECT * FROM {table}")
        assert frame.height == 0 and frame.columns == [c for c, _ in columns]
    assert sql(tmp_path, "SELECT current_setting('TimeZone') AS tz").item() == "UTC"


def test_other_stored_intervals_get_views(tmp_path: Path) -> None:
    from klinestore.config import StorageConfig
    from klinestore.storage import BarStore
    store = BarStore(tmp_path, StorageConfig(wal_fsync_window=0, resample_intervals=("1d",)))
    store.open()
    from queries_support import minute_bars
    store.append(minute_bars("BTCUSDT", 1440))
    store.close()
    assert sql(tmp_path, "SELECT count(*) FROM bars_1d").item() == 1
    assert sql(tmp_path, "SELECT count(*) FROM bars_4h").item() == 0


def test_published_tables_are_read(tmp_path: Path) -> None:
    with QualityDB(tmp_path) as db:
        db.insert_dataqual([(T0, "BTCUSDT", 0.9, 1, 0, 0, "1 missing stream")])
        db.publish()
    frame = sql(tmp_path, "SELECT symbol, score, reasons, ts FROM dataqual")
    assert frame.row(0)[:3] == ("BTCUSDT", 0.9, "1 missing stream")


@pytest.mark.parametrize("query", [
    "COPY (SELECT 1) TO '{out}/x.csv'",
    "COPY bars_1m TO '{data}/bars/interval=1m/evil.parquet' (FORMAT parquet)",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{data}/bars/x.csv'",
    "EXPORT DATABASE '{data}/bars/dump'",
    "ATTACH '{data}/bars/x.duckdb' AS disk",
    "ATTACH '{out}/x.duckdb' AS disk",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PREPARE p AS COPY (SELECT 1) TO '{data}/bars/x.csv'",
    "SET enable_external_access = true",
    "SET allowed_directories = ['/']",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('{out}/secret.txt')",
    "SELECT * FROM read_parquet('{data}/bars/../../secret.txt')",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    "SELECT 1; COPY (SELECT 1) TO '{out}/y.csv'",
    "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "IMPORT DATABASE '{data}/bars'",
])
def test_read_only(dataset: Path, tmp_path: Path, query: str) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))
    with pytest.raises(SqlError) as info:
        sql(dataset, query.format(data=dataset, out=tmp_path))
    assert "\n" not in str(info.value)
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt"]


@pytest.mark.parametrize("query", [
    "CREATE TABLE t AS SELECT symbol, count(*) AS n FROM bars_1h GROUP BY 1; SELECT * FROM t ORDER BY 1",
    "DROP VIEW bars", "INSERT INTO dataqual SELECT * FROM dataqual", "UPDATE gaps SET reason = 'x'",
    "DELETE FROM gaps", "ALTER VIEW bars RENAME TO b", "SET threads = 1", "SET VARIABLE x = 1", "RESET threads",
    "BEGIN", "CHECKPOINT", "PRAGMA enable_profiling", "CREATE MACRO m(a) AS a", "TRUNCATE gaps",
])
def test_statements_that_are_not_reads_are_refused(dataset: Path, query: str) -> None:
    with pytest.raises(SqlError, match="is not allowed") as info:
        sql(dataset, query)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("query", [
    "DESCRIBE bars_1h", "SHOW TABLES", "PRAGMA table_info('bars_1h')", "CALL pragma_version()",
    "WITH t AS (SELECT symbol FROM bars_1h) SELECT count(*) FROM t", "SUMMARIZE SELECT close FROM bars_1h",
    "PIVOT (SELECT symbol, open_time FROM bars_1h) ON symbol USING count(*)",
])
def test_reads_run(dataset: Path, query: str) -> None:
    assert sql(dataset, query).height >= 1


def test_raw_connection_still_blocks_files_outside_the_dataset(dataset: Path, tmp_path: Path) -> None:
    con = connect(dataset)
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"COPY (SELECT 1) TO '{tmp_path}/x.csv'")
    assert not (tmp_path / "x.csv").exists()


def test_formats(dataset: Path, tmp_path: Path) -> None:
    query = "SELECT * FROM bars_1h WHERE symbol = 'BTCUSDT' ORDER BY open_time"
    expected = sql(dataset, query)
    con = connect(dataset)
    out_csv = tmp_path / "x.csv"
    assert write_result(execute(con, query), "csv", out_csv) == 24
    back = pl.read_csv(out_csv, try_parse_dates=True)
    assert back.get_column("open_time").dt.convert_time_zone("UTC").to_list() == expected.get_column("open_time").to_list()
    assert back.get_column("close").to_list() == expected.get_column("close").to_list()
    assert out_csv.read_text().splitlines()[1].split(",")[2] == "2024-01-01T00:00:00.000Z"
    out_json = tmp_path / "x.json"
    write_result(execute(con, query), "json", out_json)
    records = json.loads(out_json.read_text())
    assert len(records) == 24 and records[0]["open_time"] == "2024-01-01T00:00:00.000Z"
    assert [r["volume"] for r in records] == expected.get_column("volume").to_list()
    out_parquet = tmp_path / "x.parquet"
    write_result(execute(con, query), "parquet", out_parquet)
    assert pl.read_parquet(out_parquet).equals(expected)
    text = to_text(execute(con, query), "table", max_rows=5)
    assert "showing the first 5 of 24 rows" in text and "2024-01-01 00:00:00" in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_empty_results_keep_their_columns(dataset: Path) -> None:
    con = connect(dataset)
    assert to_text(execute(con, "SELECT symbol, close FROM bars WHERE false"), "csv") == "symbol,close\n"
    assert to_text(execute(con, "SELECT symbol FROM bars WHERE false"), "json") == "[]\n"
    assert "no rows" in to_text(execute(con, "SELECT symbol FROM bars WHERE false"), "table")


def test_cli_query_formats_and_errors(dataset: Path, tmp_path: Path) -> None:
    ok = cli("SELECT symbol, count(*) AS n FROM bars_1m GROUP BY 1 ORDER BY 1", "--data-dir", str(dataset),
             "--format", "csv")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "symbol,n\nBTCUSDT,1440\nETHUSDT,1440\n"
    table = cli("SELECT * FROM bars_1m", "--data-dir", str(dataset), "--max-rows", "3")
    assert table.returncode == 0 and "showing the first 3 of 2,880 rows" in table.stdout
    bad = cli("SELECT foo FROM bars", "--data-dir", str(dataset))
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == ['klinestore sql: error: Binder Error: Referenced column "foo" not found '
                                               'in FROM clause!']
    refused = cli(f"COPY bars TO '{tmp_path}/x.csv'", "--data-dir", str(dataset))
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "COPY is not allowed" in refused.stderr and not (tmp_path / "x.csv").exists()
    parquet = cli("SELECT * FROM bars_4h", "--data-dir", str(dataset), "--format", "parquet")
    assert parquet.returncode == 1 and "needs --out" in parquet.stderr
    out = tmp_path / "four.parquet"
    written = cli("SELECT * FROM bars_4h", "--data-dir", str(dataset), "--out", str(out))
    assert written.returncode == 0 and pl.read_parquet(out).height == 12
    missing = cli("SELECT 1", "--data-dir", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "no data directory" in missing.stderr


def test_prompt(dataset: Path) -> None:
    script = ".tables\n.schema bars_1h\nSELECT count(*) AS n\n  FROM bars_1h;\n.format csv\nSELECT 7 AS x;\nSELECT nope FROM bars;\n.quit\n"
    result = cli("--data-dir", str(dataset), stdin=script)
    assert "bars_4h" in result.stdout and "dataqual" in result.stdout and "open_time" in result.stdout
    assert "48" in result.stdout and "x\n7\n" in result.stdout
    assert result.stderr.strip().splitlines() == [
        'error: Binder Error: Referenced column "nope" not found in FROM clause!']
    assert result.returncode == 1


def test_identical_rows_in_two_files_show_once(tmp_path: Path) -> None:
    """A compaction's output and its inputs (same rows, same versions) coexist for the grace period."""
    import shutil

    from klinestore.storage.layout import FileName

    data_dir = build_dataset(tmp_path / "data", ("BTCUSDT",), 120)
    before = sql(data_dir, "SELECT * FROM bars ORDER BY interval, open_time")
    for path in list((data_dir / "bars").rglob("*.parquet")):
        name = FileName.parse(path.name)
        shutil.copy(path, path.with_name(FileName(name.stamp + 1, name.writer, name.generation + 1).name))
    frame = sql(data_dir, "SELECT * FROM bars ORDER BY interval, open_time")
    assert frame.height == before.height == 120 + 24 + 8 + 2 and frame.equals(before)
