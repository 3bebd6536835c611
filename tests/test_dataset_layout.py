"""What Spark and Trino rely on (docs/scaling.md), checked on a real dataset with pyarrow and DuckDB.

The column table, the Trino DDL and the dedup view in docs/scaling.md are parsed here and
compared with the files klinestore writes, so the documentation cannot drift from the layout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from klinestore.storage import Bar, BarStore, bars_relation_sql
from queries_support import CONFIG, T0, minute_bars

DOC = Path(__file__).resolve().parents[1] / "docs" / "scaling.md"
_ROW = re.compile(r"^\| `(\w+)` \| (file|path) \|\s*`?([^|`]*?)`?\s*\| `(\w+)` \| `([\w()]+)` \|$", re.MULTILINE)
_SPARK = {pa.string(): "string", pa.float64(): "double", pa.int64(): "bigint", pa.bool_(): "boolean",
          pa.timestamp("ms", tz="UTC"): "timestamp"}
_TRINO = {pa.string(): "varchar", pa.float64(): "double", pa.int64(): "bigint", pa.bool_(): "boolean",
          pa.timestamp("ms", tz="UTC"): "timestamp(3)"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of two symbols across a month end, resampled, with corrections of stored bars."""
    data = tmp_path_factory.mktemp("layout") / "data"
    start = T0 - 24 * 3600_000  # 2023-12-31: December and January partitions
    with BarStore(data, CONFIG) as store:
        for n, symbol in enumerate(("BTCUSDT", "ETHUSDT")):
            store.append(minute_bars(symbol, 2880, t0=start, seed=n))
        store.flush()
        first = minute_bars("BTCUSDT", 10, t0=T0)
        store.append([Bar(**{**{f: getattr(b, f) for f in Bar.__struct_fields__}, "close": b.close + 0.5,
                             "high": b.high + 0.5}) for b in first])  # a correction: a newer version of 10 keys
        store.flush()
    return data


def doc_columns() -> list[tuple[str, str, str, str, str]]:
    rows = _ROW.findall(DOC.read_text(encoding="utf-8"))
    assert rows, "docs/scaling.md lost its column table"
    return rows


def parquet_type(column: pq.ColumnSchema) -> str:
    """How the docs spell a Parquet column type."""
    logical = column.logical_type
    if logical.type == "TIMESTAMP":
        spec = json.loads(logical.to_json())
        assert (spec["isAdjustedToUTC"], spec["timeUnit"]) == (True, "milliseconds"), spec
        return f"{column.physical_type} TIMESTAMP(MILLIS, UTC)"
    if logical.type == "STRING":
        return f"{column.physical_type} STRING"
    assert logical.type == "NONE", logical
    return column.physical_type


def test_hive_discovery_finds_interval_and_month_only_in_the_path(data_dir: Path) -> None:
    dataset = ds.dataset(data_dir / "bars", format="parquet", partitioning="hive")
    assert dataset.partitioning is not None
    assert dataset.partitioning.schema == pa.schema([("interval", pa.string()), ("month", pa.string())])
    for fragment in dataset.get_fragments():
        file_columns = set(fragment.physical_schema.names)
        assert not file_columns & {"interval", "month"}, fragment.path
    intervals = set(dataset.to_table(columns=["interval"]).column("interval").to_pylist())
    months = set(dataset.to_table(columns=["month"]).column("month").to_pylist())
    assert intervals == {"1m", "5m", "15m", "1h", "4h"} and months == {"2023-12", "2024-01", "2023", "2024"}
    for interval, month in set(zip(*dataset.to_table(columns=["interval", "month"]).to_pydict().values())):
        assert len(month) == (4 if interval in ("1h", "4h") else 7), (interval, month)  # 1h and longer: yearly
    assert not list((data_dir / "bars").rglob(".*"))  # nothing hidden left behind for engines to skip


def test_the_documented_column_table_matches_the_files(data_dir: Path) -> None:
    rows = doc_columns()
    dataset = ds.dataset(data_dir / "bars", format="parquet", partitioning="hive")
    a_file = next(iter(dataset.get_fragments())).path
    parquet = pq.ParquetFile(a_file).schema
    file_rows = [r for r in rows if r[1] == "file"]
    assert [r[0] for r in file_rows] == parquet.names  # every file column, in file order
    assert [r[0] for r in rows if r[1] == "path"] == ["interval", "month"]
    for name, _, documented, spark, trino in rows:
        arrow = dataset.schema.field(name).type
        assert (spark, trino) == (_SPARK[arrow], _TRINO[arrow]), name
        if name in parquet.names:
            assert documented == parquet_type(parquet.column(parquet.names.index(name))), name
            column = parquet.column(parquet.names.index(name))
            assert column.converted_type in ("NONE", "UTF8", "TIMESTAMP_MILLIS"), name


def test_the_trino_ddl_declares_the_documented_columns() -> None:
    text = DOC.read_text(encoding="utf-8")
    body = text.split("CREATE TABLE hive.klinestore.bars_files (", 1)[1].split("\n)", 1)[0]
    declared = [tuple(line.strip().rstrip(",").replace('"', "").split(" ", 1)) for line in body.strip().splitlines()]
    assert declared == [(r[0], r[4]) for r in doc_columns()]
    assert "partitioned_by = ARRAY['interval', 'month']" in text


def test_the_documented_dedup_view_equals_klinestores_relation(data_dir: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    view = text.split("CREATE OR REPLACE VIEW hive.klinestore.bars AS\n", 1)[1].split("```", 1)[0]
    glob = f"{data_dir}/bars/interval=*/month=*/*.parquet"
    files = (f"(SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
             "hive_types = {'interval': VARCHAR, 'month': VARCHAR}))")
    assert "hive.klinestore.bars_files" in view
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        documented = con.sql(view.replace("hive.klinestore.bars_files", files).rstrip().rstrip(";")).pl()
        ours = con.sql(bars_relation_sql(data_dir)).pl()
        raw = con.execute(f"SELECT count(*) FROM {files}").fetchone()
    order = ["symbol", "interval", "open_time"]
    assert raw is not None and raw[0] > ours.height  # the files do hold duplicated keys
    assert documented.sort(order).equals(ours.select(documented.columns).sort(order))
    corrected = documented.filter((pl.col("symbol") == "BTCUSDT") & (pl.col("interval") == "1m")).sort("open_time")
    assert corrected.filter(pl.col("open_time").dt.epoch("ms") == T0).get_column("close").item() == \
        minute_bars("BTCUSDT", 1, t0=T0)[0].close + 0.5
