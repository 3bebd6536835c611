"""Every DuckDB type in every output format: written, or refused in one line (issue 14, case 4)."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from klinestore.queries.errors import QueryError
from klinestore.queries.output import FORMATS, write_result
from klinestore.queries.sql import connect, execute
from support import klinestore_command, subprocess_env

#: name -> a DuckDB expression of that type (values chosen to hit the writers' weak spots).
TYPES = {
    "list": "[1, 2]", "nested_list": "[[1], [2, NULL]]", "struct": "{'a': 1, 'b': [1]}", "map": "MAP {'k': 1}",
    "fixed_array": "[1, 2]::INTEGER[2]", "blob": "'a\\x00b'::BLOB", "bit": "'101'::BIT",
    "decimal": "1.5::DECIMAL(10, 2)", "hugeint": "170141183460469231731687303715884105727::HUGEINT",
    "uhugeint": "1::UHUGEINT", "ubigint": "18446744073709551615::UBIGINT", "tinyint": "1::TINYINT",
    "float": "1.5::FLOAT", "nan": "'nan'::DOUBLE", "inf": "'-inf'::DOUBLE", "date": "DATE '2024-01-01'",
    "time": "TIME '12:00:01'", "timetz": "TIMETZ '12:00:00+02'", "interval": "INTERVAL 3 DAY",
    "timestamp": "TIMESTAMP '2024-01-01 00:00:00'", "timestamp_ns": "TIMESTAMP_NS '2024-01-01 00:00:00.123456789'",
    "timestamp_s": "TIMESTAMP_S '2024-01-01'", "timestamptz": "TIMESTAMPTZ '2024-01-01 00:00:00+00'",
    "timestamp_inf": "'infinity'::TIMESTAMP", "timestamptz_inf": "'-infinity'::TIMESTAMPTZ",
    "date_inf": "'-infinity'::DATE", "uuid": "'0ee2d8f4-4b55-4c5e-9c2f-6f1d8f0c4a11'::UUID",
    "enum": "'a'::ENUM('a', 'b')", "union": "union_value(k := 1)", "json": "'{\"a\": 1}'::JSON",
    "null": "NULL", "text": "'a,\"b\"\nc'", "list_of_struct_of_blob": "[{'x': 'a'::BLOB}]",
    "struct_of_time": "{'t': TIMESTAMPTZ '2024-01-01 00:00:00+00'}", "list_of_interval": "[INTERVAL 1 HOUR]",
    "varint": "12345678901234567890::VARINT",
}
REFUSED = {"varint"}  # DuckDB's opaque types: refused with a hint to CAST


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_duckdb_type_is_written_or_refused_in_one_line(tmp_path: Path, fmt: str) -> None:
    con = connect(tmp_path)
    try:
        for name, expr in TYPES.items():
            for query in (f"SELECT {expr} AS v FROM range(3)", f"SELECT {expr} AS v WHERE false"):
                out = tmp_path / f"{name}.parquet" if fmt == "parquet" else None
                buffer = io.StringIO()
                try:
                    rows = write_result(execute(con, query), fmt, out, stream=buffer)
                except QueryError as exc:
                    assert name in REFUSED, f"{name} as {fmt}: {exc}"
                    assert "\n" not in str(exc) and "CAST" in str(exc)
                    continue
                assert name not in REFUSED or "false" in query  # no value: nothing to refuse
                assert rows == (3 if "false" not in query else 0)
                if fmt == "parquet":
                    assert pq.read_table(out).num_rows == rows
                elif fmt == "json":
                    assert len(json.loads(buffer.getvalue())) == rows
    finally:
        con.close()


def cell(con, expr: str, fmt: str) -> str:
    buffer = io.StringIO()
    write_result(execute(con, f"SELECT {expr} AS v"), fmt, stream=buffer)
    return buffer.getvalue()


def test_nested_values_are_json_text_and_blobs_hex(tmp_path: Path) -> None:
    con = connect(tmp_path)
    try:
        assert cell(con, "[1, 2]", "csv") == 'v\n"[1,2]"\n'
        assert cell(con, "{'a': 1, 'b': [NULL]}", "csv") == 'v\n"{""a"":1,""b"":[null]}"\n'
        assert json.loads(cell(con, "{'a': [1, 2]}", "json")) == [{"v": {"a": [1, 2]}}]
        assert json.loads(cell(con, "MAP {'k': 1}", "json")) == [{"v": {"k": 1}}]
        assert cell(con, "'a\\x00b'::BLOB", "csv") == "v\n\\x610062\n"
        assert json.loads(cell(con, "'a'::BLOB", "json")) == [{"v": "\\x61"}]
        assert json.loads(cell(con, "['a'::BLOB]", "json")) == [{"v": ["\\x61"]}]
        assert cell(con, "'infinity'::TIMESTAMP", "csv") == "v\ninfinity\n"
        assert json.loads(cell(con, "INTERVAL 3 DAY", "json")) == [{"v": "3 days"}]
        assert "[1,2]" in cell(con, "[1, 2]", "table")
    finally:
        con.close()


@pytest.mark.parametrize(("fmt", "query"), [("csv", "SELECT [1,2] AS l"), ("json", "SELECT 'a'::BLOB AS b"),
                                            ("csv", "SELECT 1::VARINT AS v")])
def test_sql_cli_never_prints_a_traceback_for_a_type(tmp_path: Path, fmt: str, query: str) -> None:
    done = subprocess.run(klinestore_command("sql", "--data-dir", str(tmp_path), "--format", fmt, query),
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr and "panicked" not in done.stderr
    if "VARINT" in query:
        assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    else:
        assert done.returncode == 0, done.stderr
