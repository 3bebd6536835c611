"""The Python API: bars by symbol, interval and range (Polars or pandas), SQL, connect, gaps."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from klinestore import queries
from klinestore.storage import Bar, BarStore
from klinestore.storage.reader import read_bars
from queries_support import CONFIG, MINUTE, T0, build_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("api") / "data", ("BTCUSDT", "ETHUSDT"), 1440, skip=range(60, 63))


def test_bars_accept_iso_datetimes_and_ms(dataset: Path) -> None:
    by_iso = queries.bars("BTCUSDT", "5m", "2024-01-01T02:00", "2024-01-01T03:00Z", data_dir=dataset)
    by_ms = queries.bars("btcusdt", "5m", T0 + 120 * MINUTE, T0 + 180 * MINUTE, data_dir=dataset)
    by_dt = queries.bars("BTCUSDT", "5m", datetime(2024, 1, 1, 2, tzinfo=timezone.utc), datetime(2024, 1, 1, 3),
                         data_dir=dataset)
    assert by_iso.height == 12 and by_iso.equals(by_ms) and by_iso.equals(by_dt)
    assert by_iso.schema["open_time"] == pl.Datetime("ms", "UTC")
    assert queries.bars("BTCUSDT", "1m", data_dir=dataset).equals(read_bars(dataset, "BTCUSDT", "1m"))


def test_bars_as_pandas(dataset: Path) -> None:
    frame = queries.bars("ETHUSDT", "1h", "2024-01-01", "2024-01-02", data_dir=dataset, as_pandas=True)
    assert isinstance(frame, pd.DataFrame) and len(frame) == 24
    assert str(frame["open_time"].dtype) == "datetime64[ms, UTC]"


def test_sql_and_connect_default_to_the_configured_data_dir(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLINESTORE_DATA_DIR", str(dataset))
    top = queries.sql("SELECT symbol, count(*) AS n FROM bars_1h GROUP BY 1 ORDER BY 1")
    assert top.rows() == [("BTCUSDT", 24), ("ETHUSDT", 24)]
    con = queries.connect()
    assert con.sql("SELECT count(*) FROM bars_4h").fetchall() == [(12,)]
    with pytest.raises(queries.SqlError, match="COPY is not allowed"):
        queries.sql("COPY bars TO 'x.csv'")


def test_gaps(dataset: Path) -> None:
    gaps = queries.gaps("BTCUSDT", "1m", "2024-01-01", "2024-01-02", data_dir=dataset)
    assert gaps.rows() == [(datetime(2024, 1, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 1, 1, 2, tzinfo=timezone.utc), 3)]
    assert queries.gaps("BTCUSDT", "5m", "2024-01-01", "2024-01-02", data_dir=dataset).get_column("bars").to_list() == [1]
    assert queries.gaps("BTCUSDT", "5m", "2024-01-01", "2024-01-02", data_dir=dataset, count_incomplete=False).is_empty()


def test_sql_keeps_one_session_that_sees_new_files_and_new_intervals(tmp_path: Path) -> None:
    """A long-lived process pays for the session once; what is published later is still seen."""
    data = build_dataset(tmp_path / "data", ("BTCUSDT",), 120)
    count = "SELECT count(*) AS n FROM bars_1m"
    assert queries.sql(count, data_dir=data).item() == 120
    first = queries.api._SQL_SESSIONS[data.resolve()][1]
    build_dataset(data, ("ETHUSDT",), 60)  # another publish: a new file in the same partitions
    assert queries.sql(count, data_dir=data).item() == 180
    assert queries.api._SQL_SESSIONS[data.resolve()][1] is first  # the same session answered
    with pytest.raises(queries.SqlError, match="bars_1d"):
        queries.sql("SELECT count(*) FROM bars_1d", data_dir=data)
    with BarStore(data, CONFIG) as store:  # a daily bar: an interval the session has no view for
        store.append([Bar("BTCUSDT", "1d", T0, T0 + 86_400_000 - 1, 100.0, 101.0, 99.0, 100.5, 1.5, 150.0, 3, 0.75,
                          75.0, source="ws")])
    assert queries.sql("SELECT count(*) FROM bars_1d", data_dir=data).item() == 1
    assert queries.api._SQL_SESSIONS[data.resolve()][1] is not first
