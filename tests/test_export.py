"""Exports: round trips per format, freqtrade's files and loader, backtesting.py, the gap policy."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow.feather as feather
import pytest

from klinestore import queries
from klinestore.config import StorageConfig
from klinestore.queries.errors import ExportError, GapError, QueryError
from klinestore.queries.export import BINANCE_HEADER, export, freqtrade_pair, freqtrade_path
from klinestore.storage import import_archives
from klinestore.storage.reader import read_bars
from queries_support import MINUTE, T0, build_dataset
from support import klinestore_command, subprocess_env

DAY = 1440 * MINUTE
SKIPPED = (*range(600, 605), 1000)  # 10:00-10:04 and 16:40 of the first day


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("export") / "data", ("BTCUSDT", "ETHUSDT"), 2 * 1440)


@pytest.fixture(scope="module")
def holey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("holes") / "data", ("BTCUSDT",), 2 * 1440, skip=SKIPPED)


def run_export(data_dir: Path, out: Path, fmt: str, interval: str = "1h", **kw: object) -> object:
    return export("BTCUSDT", interval, "2024-01-01", "2024-01-03", fmt, out, data_dir=data_dir, **kw)


def test_parquet_round_trip(dataset: Path, tmp_path: Path) -> None:
    report = run_export(dataset, tmp_path / "x.parquet", "parquet", "1m")
    assert report.rows == 2880 and report.missing == 0
    assert pl.read_parquet(tmp_path / "x.parquet").equals(read_bars(dataset, "BTCUSDT", "1m"))


def test_csv_round_trip(dataset: Path, tmp_path: Path) -> None:
    run_export(dataset, tmp_path / "x.csv", "csv", "5m")
    back = pl.read_csv(tmp_path / "x.csv", try_parse_dates=True).with_columns(
        pl.col("open_time", "close_time").dt.convert_time_zone("UTC").cast(pl.Datetime("ms", "UTC"))
    )
    assert back.equals(read_bars(dataset, "BTCUSDT", "5m"))


def test_binance_csv_round_trips_through_import(dataset: Path, tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-1m-2024-01.csv"
    run_export(dataset, path, "binance", "1m")
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(BINANCE_HEADER) and len(lines) == 2881
    assert lines[1].split(",")[0] == str(T0) and lines[1].split(",")[6] == str(T0 + MINUTE - 1)
    assert "e-" not in path.read_text() and "e+" not in path.read_text()
    import_archives([path], tmp_path / "again", StorageConfig(wal_fsync_window=0))
    exported = read_bars(tmp_path / "again", "BTCUSDT", "1m").drop("source")
    assert exported.equals(read_bars(dataset, "BTCUSDT", "1m").drop("source"))


def test_freqtrade_layout_schema_and_loader(dataset: Path, tmp_path: Path, shared_data: Path) -> None:
    report = run_export(dataset, tmp_path / "user_data", "freqtrade", "5m")
    assert report.path == tmp_path / "user_data" / "futures" / "BTC_USDT_USDT-5m-futures.feather"
    real = shared_data / "um" / "klines-freqtrade" / "BTC_USDT_USDT-5m-futures.feather"
    ours_table, real_table = feather.read_table(report.path), feather.read_table(real)
    assert ours_table.schema.remove_metadata() == real_table.schema.remove_metadata()
    assert ours_table.schema.pandas_metadata["index_columns"][0]["kind"] == "range"
    # FeatherDataHandler._ohlcv_load, step by step
    frames = []
    for path in (report.path, real):
        data = pd.read_feather(path)
        data.columns = ["date", "open", "high", "low", "close", "volume"]
        data = data.astype(dtype={c: "float" for c in ("open", "high", "low", "close", "volume")})
        data["date"] = pd.to_datetime(data["date"], unit="ms", utc=True)
        frames.append(data)
    ours, theirs = frames
    assert list(ours.dtypes) == list(theirs.dtypes)
    assert str(ours["date"].dtype) == "datetime64[ns, UTC]"
    stored = read_bars(dataset, "BTCUSDT", "5m")
    assert ours["date"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC") and len(ours) == stored.height
    assert ours["close"].tolist() == stored.get_column("close").to_list()
    assert ours["volume"].tolist() == stored.get_column("volume").to_list()


def test_freqtrade_names() -> None:
    assert freqtrade_pair("BTCUSDT") == "BTC/USDT:USDT"
    assert freqtrade_pair("1000PEPEUSDC") == "1000PEPE/USDC:USDC"
    assert freqtrade_pair("BTCUSDT_250926") == "BTC/USDT:USDT-250926"
    assert freqtrade_path(Path("d"), "ETHUSDT", "1M") == Path("d/futures/ETH_USDT_USDT-1Mo-futures.feather")
    with pytest.raises(ExportError):
        freqtrade_pair("BTCEUR")


def test_backtesting_py_runs_on_the_export(dataset: Path, tmp_path: Path) -> None:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    run_export(dataset, tmp_path / "bt.parquet", "backtesting", "5m")
    data = pd.read_parquet(tmp_path / "bt.parquet")
    assert list(data.columns) == ["Open", "High", "Low", "Close", "Volume"]
    assert isinstance(data.index, pd.DatetimeIndex) and str(data.index.tz) == "UTC"
    assert data.index.is_monotonic_increasing and not data.isna().any().any()

    class SmaCross(Strategy):
        def init(self) -> None:
            self.fast = self.I(SMA, self.data.Close, 10)
            self.slow = self.I(SMA, self.data.Close, 30)

        def next(self) -> None:
            if crossover(self.fast, self.slow):
                self.buy()
            elif crossover(self.slow, self.fast):
                self.sell()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(data, SmaCross, cash=1_000_000, commission=0.0004, finalize_trades=True).run()
    assert stats["# Trades"] > 0 and stats["Start"] == pd.Timestamp("2024-01-01", tz="UTC")


def test_gaps_fail_by_default_and_write_nothing(holey: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    out.write_bytes(b"previous export")
    with pytest.raises(GapError) as info:
        run_export(holey, out, "parquet", "1m")
    assert info.value.gaps == [(T0 + 600 * MINUTE, T0 + 604 * MINUTE), (T0 + 1000 * MINUTE, T0 + 1000 * MINUTE)]
    message = str(info.value)
    assert message.startswith("6 missing 1m bars for BTCUSDT in [2024-01-01 00:00, 2024-01-03 00:00), 2 runs")
    assert "2024-01-01 10:00 .. 2024-01-01 10:04 (5 bars)" in message and "2024-01-01 16:40 (1 bar)" in message
    assert out.read_bytes() == b"previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["x.parquet"]


def test_incomplete_resampled_bars_count_as_gaps(holey: Path, tmp_path: Path) -> None:
    with pytest.raises(GapError) as info:
        run_export(holey, tmp_path / "x.parquet", "parquet", "5m")
    assert info.value.gaps == [(T0 + 600 * MINUTE, T0 + 600 * MINUTE), (T0 + 1000 * MINUTE, T0 + 1000 * MINUTE)]
    with pytest.raises(GapError) as hourly:
        run_export(holey, tmp_path / "x.parquet", "parquet", "1h")
    assert len(hourly.value.gaps) == 2
    report = run_export(holey, tmp_path / "x.parquet", "parquet", "1h", allow_incomplete=True)
    assert report.rows == 48 and report.missing == 0


def test_drop_exports_what_there_is(holey: Path, tmp_path: Path) -> None:
    report = run_export(holey, tmp_path / "x.parquet", "parquet", "5m", on_gap="drop")
    assert report.rows == 574 and report.missing == 2 and report.filled == 0
    frame = pl.read_parquet(tmp_path / "x.parquet")
    assert frame.height == 574 and frame.get_column("is_complete").all()
    assert "2 missing bars not exported" in report.summary()


def test_fill_writes_empty_bars_at_the_previous_close(holey: Path, tmp_path: Path) -> None:
    report = run_export(holey, tmp_path / "x.parquet", "parquet", "1m", on_gap="fill")
    assert report.rows == 2880 and report.filled == 6 and "filled 6 missing bars" in report.summary()
    frame = pl.read_parquet(tmp_path / "x.parquet")
    assert frame.null_count().sum_horizontal().item() == 0
    assert not frame.select(pl.all().exclude("symbol", "interval", "open_time", "close_time", "is_complete",
                                            "source").is_nan().any()).row(0)[0]
    assert frame.get_column("open_time").is_sorted() and frame.get_column("open_time").n_unique() == 2880
    filled = frame.filter(pl.col("source") == "fill")
    assert filled.height == 6
    before = frame.filter(pl.col("open_time") == pl.datetime(2024, 1, 1, 9, 59, time_zone="UTC")).row(0, named=True)
    first = filled.row(0, named=True)
    assert first["open"] == first["high"] == first["low"] == first["close"] == before["close"]
    assert (first["volume"], first["trades"], first["is_complete"]) == (0.0, 0, False)
    assert first["close_time"] - first["open_time"] == pd.Timedelta(milliseconds=MINUTE - 1)


def test_fill_for_backtesting_has_no_nan(holey: Path, tmp_path: Path) -> None:
    run_export(holey, tmp_path / "bt.parquet", "backtesting", "5m", on_gap="fill")
    data = pd.read_parquet(tmp_path / "bt.parquet")
    assert len(data) == 576 and not data.isna().any().any()


def test_fill_at_the_range_start_takes_the_close_before_it(holey: Path, tmp_path: Path) -> None:
    report = export("BTCUSDT", "1m", T0 + 600 * MINUTE, T0 + 610 * MINUTE, "parquet", tmp_path / "x.parquet",
                    data_dir=holey, on_gap="fill")
    frame = pl.read_parquet(tmp_path / "x.parquet")
    assert report.filled == 5 and frame.height == 10
    assert frame.get_column("close")[0] == read_bars(holey, "BTCUSDT", "1m", T0 + 599 * MINUTE, T0 + 600 * MINUTE)[
        "close"][0]


def test_fill_before_the_first_bar_is_reported_not_invented(holey: Path, tmp_path: Path) -> None:
    report = export("BTCUSDT", "1m", T0 - 10 * MINUTE, T0 + 10 * MINUTE, "csv", tmp_path / "x.csv",
                    data_dir=holey, on_gap="fill")
    assert report.rows == 10 and report.filled == 0 and report.missing == 10
    assert "no close to fill with" in report.summary()


def test_range_is_half_open_and_clamped_to_the_last_closed_bar(dataset: Path, tmp_path: Path) -> None:
    report = export("BTCUSDT", "1h", "2024-01-01T05:30", "2024-01-01T08:00:00Z", "parquet", tmp_path / "x.parquet",
                    data_dir=dataset)
    frame = pl.read_parquet(tmp_path / "x.parquet")
    assert frame.get_column("open_time").dt.hour().to_list() == [6, 7] and report.rows == 2
    now = T0 + 2 * DAY + 30 * MINUTE  # the service stopped at the end of day 2; the 1h bar at 00:00 is open
    report = export("BTCUSDT", "1h", "2024-01-02", "2030-01-01", "parquet", tmp_path / "y.parquet",
                    data_dir=dataset, now_ms=now)
    assert report.rows == 24 and report.end_ms == T0 + 2 * DAY
    with pytest.raises(QueryError, match="empty range"):
        export("BTCUSDT", "1h", "2024-01-01", "2024-01-01", "csv", tmp_path / "z.csv", data_dir=dataset)
    with pytest.raises(ExportError, match="nothing to export"):
        export("BTCUSDT", "1h", "2024-01-03", "2024-01-04", "csv", tmp_path / "z.csv", data_dir=dataset, now_ms=now)


def test_cli(holey: Path, tmp_path: Path) -> None:
    base = ["--symbol", "btcusdt", "--interval", "1m", "--start", "2024-01-01", "--end", str(T0 + DAY),
            "--data-dir", str(holey)]
    fail = subprocess.run(klinestore_command("export", *base, "--format", "csv", "--out", str(tmp_path / "a.csv")),
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert fail.returncode == 3 and "Traceback" not in fail.stderr
    assert fail.stderr.splitlines()[0].startswith("klinestore export: error: 6 missing 1m bars for BTCUSDT")
    assert "2024-01-01 10:00 .. 2024-01-01 10:04 (5 bars)" in fail.stderr and not (tmp_path / "a.csv").exists()
    ok = subprocess.run(klinestore_command("export", *base, "--format", "freqtrade", "--out", str(tmp_path),
                                           "--on-gap", "fill"),
                        env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "filled 6 missing bars" in ok.stdout
    assert len(pd.read_feather(tmp_path / "futures" / "BTC_USDT_USDT-1m-futures.feather")) == 1440
    bad = subprocess.run(klinestore_command("export", *base[:4], "--start", "yesterday-ish", "--end", "2024-02-01",
                                            "--format", "csv", "--out", str(tmp_path / "b.csv")),
                         env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "start" in bad.stderr


def test_spot_archives_are_queryable_and_exportable_apart_from_usdm(tmp_path: Path, shared_data: Path) -> None:
    data = tmp_path / "data"
    import_archives([shared_data / "spot" / "klines" / "BTCUSDT" / "1m"], data, StorageConfig(wal_fsync_window=0),
                    market="spot")
    assert freqtrade_path(Path("d"), "BTCUSDT", "1h", "spot") == Path("d/BTC_USDT-1h.feather")
    assert queries.sql("SELECT count(*) AS n FROM bars", data_dir=data)["n"][0] == 0  # USD-M stays USD-M
    counts = queries.sql("SELECT count(*) AS n, bool_and(is_complete) AS ok FROM spot_bars_1h", data_dir=data)
    assert counts.row(0) == (168, True)  # 7 days of 1m archives, resampled on import
    assert queries.bars("BTCUSDT", "1h", data_dir=data, market="spot").height == 168

    proc = subprocess.run(klinestore_command(
        "export", "--market", "spot", "--symbol", "BTCUSDT", "--interval", "1h", "--start", "2023-01-01",
        "--end", "2023-01-08", "--format", "freqtrade", "--out", str(tmp_path / "user_data"), "--data-dir", str(data)),
        env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_feather(tmp_path / "user_data" / "BTC_USDT-1h.feather")
    assert len(frame) == 168 and str(frame["date"].dtype) == "datetime64[ns, UTC]"
    assert frame["date"].iloc[0] == pd.Timestamp("2023-01-01", tz="UTC")


def test_a_parquet_export_over_months_keeps_order_and_the_dataset_encodings(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from klinestore.storage.store import BarStore
    from storage_support import bar

    data = tmp_path / "data"
    days = (0, 31, 45, 60)  # January, February twice, March: one chunk per month, read ahead
    with BarStore(data, StorageConfig(resample_intervals=("1h",))) as store:
        for day in days:
            store.append([bar(minute=day * 1440 + m, price=100.0 + day + m % 7) for m in range(120)])
            store.flush()
    end = T0 + 61 * DAY
    report = export("BTCUSDT", "1m", T0, end, "parquet", tmp_path / "x.parquet", data_dir=data, on_gap="drop")
    frame = pl.read_parquet(tmp_path / "x.parquet")
    assert report.rows == frame.height == 480 and frame.equals(read_bars(data, "BTCUSDT", "1m", T0, end))
    assert frame.get_column("open_time").is_sorted()
    columns = pq.ParquetFile(tmp_path / "x.parquet").metadata.row_group(0)
    encodings = {columns.column(i).path_in_schema: columns.column(i).encodings for i in range(columns.num_columns)}
    assert "DELTA_BINARY_PACKED" in encodings["open_time"]
    assert not any("DICTIONARY" in e for e in encodings["close"])  # no dictionary tried on prices
