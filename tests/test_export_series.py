"""Exports of the futures series: --what funding|mark|index|aggtrades, and freqtrade's mark and funding files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from klinestore.config import StorageConfig
from klinestore.core.intervals import HOUR_MS, MINUTE_MS
from klinestore.queries import export
from klinestore.queries.errors import ExportError
from klinestore.queries.export_series import export_series
from klinestore.storage import AggTrade, BarStore, SeriesStores, TradeStore, funding_row, price_bar
from storage_support import bar
from support import klinestore_command, subprocess_env

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
HOURS = 17
pd = pytest.importorskip("pandas")


def mark_price(minute: int) -> float:
    return 40_000.0 + (minute * 37 % 101) - minute * 0.25


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """17 hours of BTCUSDT: 1h klines, 1m mark bars (5m..4h resampled on flush), 3 funding events, 3 aggTrades."""
    root = tmp_path_factory.mktemp("futures")
    with BarStore(root, StorageConfig(resample_intervals=("1h",))) as store:
        store.append([bar(minute=m, t0=T0, price=40_000.0 + m) for m in range(HOURS * 60)])
    stores = SeriesStores(root, StorageConfig(persist_aggtrades=True))
    stores.open()
    stores.sinks["mark"].append([
        price_bar("BTCUSDT", "1m", T0 + m * MINUTE_MS, (mark_price(m), mark_price(m) + 3, mark_price(m) - 2, mark_price(m) + 1))
        for m in range(HOURS * 60)])
    stores.sinks["funding"].append([funding_row("BTCUSDT", T0 + h * HOUR_MS, rate, 40_000.5 + h)
                                    for h, rate in ((0, 0.0001), (8, -0.00005), (16, 0.0003))])
    assert isinstance(stores.trades, TradeStore)
    stores.trades.append([AggTrade("BTCUSDT", i, 40_000.5, 0.001 * i, i, i, T0 + i * 1000, i % 2 == 1) for i in (1, 2, 3)])
    stores.close()
    return root


def freqtrade_load(datadir: Path, pair: str, timeframe: str, candle: str) -> pd.DataFrame:
    """freqtrade's FeatherDataHandler rules, mirrored (the test below runs the real one where installed):
    ``<datadir>/futures/<pair_to_filename>-<tf>-<candle>.feather``, columns renamed to its six, floats, UTC dates."""
    name = pair
    for ch in ["/", " ", ".", "@", "$", "+", ":"]:
        name = name.replace(ch, "_")
    frame = pd.read_feather(datadir / "futures" / f"{name}-{timeframe}-{candle}.feather")
    frame.columns = ["date", "open", "high", "low", "close", "volume"]
    frame = frame.astype({c: "float" for c in ("open", "high", "low", "close", "volume")})
    frame["date"] = pd.to_datetime(frame["date"], unit="ms", utc=True)
    return frame


def test_freqtrade_export_writes_the_mark_and_funding_files_a_futures_backtest_loads(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "user_data" / "data" / "binance"
    report = export("BTCUSDT", "1h", T0, T0 + HOURS * HOUR_MS, "freqtrade", out, data_dir=data)
    assert report.rows == HOURS
    names = sorted(p.name for p in report.extras)
    assert names == ["BTC_USDT_USDT-1h-funding_rate.feather", "BTC_USDT_USDT-1h-mark.feather",
                     "BTC_USDT_USDT-8h-funding_rate.feather", "BTC_USDT_USDT-8h-mark.feather"]
    mark = freqtrade_load(out, "BTC/USDT:USDT", "1h", "mark")
    assert len(mark) == HOURS and str(mark["date"].dtype) == "datetime64[ns, UTC]"
    hour3 = range(180, 240)
    assert mark.iloc[3][["open", "high", "low", "close", "volume"]].tolist() == [
        mark_price(180), max(mark_price(m) + 3 for m in hour3), min(mark_price(m) - 2 for m in hour3), mark_price(239) + 1, 0.0]
    eight = freqtrade_load(out, "BTC/USDT:USDT", "8h", "mark")
    assert [d.hour for d in eight["date"]] == [0, 8]  # 16:00-24:00 is not complete: not written
    funding = freqtrade_load(out, "BTC/USDT:USDT", "8h", "funding_rate")
    assert funding[["open", "high", "low", "close", "volume"]].values.tolist() == [
        [0.0001, 0, 0, 0, 0], [-0.00005, 0, 0, 0, 0], [0.0003, 0, 0, 0, 0]]
    assert [d.hour for d in funding["date"]] == [0, 8, 16]
    assert "also BTC_USDT_USDT-8h-mark.feather" in report.summary()


def test_freqtrades_own_data_handler_loads_the_export(data: Path, tmp_path: Path) -> None:
    """freqtrade (optional: ``pip install 'klinestore[freqtrade]'``) reads the files through its own handler."""
    probe = subprocess.run([sys.executable, "-c", "import freqtrade"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("freqtrade is not installed (optional extra 'freqtrade': freqtrade==2026.9)")
    out = tmp_path / "binance"
    export("BTCUSDT", "1h", T0, T0 + HOURS * HOUR_MS, "freqtrade", out, data_dir=data)
    script = f"""
import json
from pathlib import Path
from freqtrade.configuration import TimeRange
from freqtrade.data.history.datahandlers import get_datahandler
from freqtrade.enums import CandleType
from freqtrade.exchange.exchange import Exchange
handler = get_datahandler(Path({str(out)!r}), "feather")
ff_tf = Exchange._ft_has_default["funding_fee_timeframe"]
mark_tf = Exchange._ft_has_default["mark_ohlcv_timeframe"]
out = {{}}
for name, tf, kind in (("futures", "1h", CandleType.FUTURES), ("mark", mark_tf, CandleType.MARK),
                       ("funding_rate", ff_tf, CandleType.FUNDING_RATE)):
    frame = handler.ohlcv_load("BTC/USDT:USDT", tf, candle_type=kind, timerange=None, fill_missing=False,
                               drop_incomplete=False, warn_no_data=True)
    out[name] = [tf, len(frame), [str(frame["date"].iloc[0]), float(frame["open"].iloc[0])] if len(frame) else None]
print(json.dumps(out))
"""
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    got = json.loads(loaded.stdout.strip().splitlines()[-1])
    tf = got["mark"][0]
    assert got["futures"][1] == HOURS
    assert got["mark"][1] == (HOURS if tf == "1h" else 2) and got["mark"][2] == ["2024-01-01 00:00:00+00:00", mark_price(0)]
    assert got["funding_rate"][1] == 3 and got["funding_rate"][2] == ["2024-01-01 00:00:00+00:00", 0.0001]


def test_series_export_as_parquet_and_csv(data: Path, tmp_path: Path) -> None:
    report = export_series("funding", "BTCUSDT", "2024-01-01", "2024-01-02", "csv", tmp_path / "f.csv", data_dir=data)
    assert report.rows == 3
    assert (tmp_path / "f.csv").read_text().splitlines()[:2] == [
        "symbol,funding_time,funding_rate,mark_price", "BTCUSDT,2024-01-01T00:00:00.000Z,0.0001,40000.5"]
    export_series("mark", "BTCUSDT", T0, T0 + 8 * HOUR_MS, "parquet", tmp_path / "m.parquet", data_dir=data, interval="2h")
    two = pl.read_parquet(tmp_path / "m.parquet")  # 2h is not stored: resampled from 1m
    assert two.columns == ["symbol", "interval", "open_time", "close_time", "open", "high", "low", "close",
                           "is_complete", "source"]
    assert two.height == 4 and two["open"][1] == mark_price(120) and two["source"][0] == "resample"
    trades = export_series("aggtrades", "BTCUSDT", None, None, "parquet", tmp_path / "t.parquet", data_dir=data)
    assert trades.rows == 3 and pl.read_parquet(tmp_path / "t.parquet")["agg_trade_id"].to_list() == [1, 2, 3]
    with pytest.raises(ExportError, match="no index rows stored"):
        export_series("index", "BTCUSDT", None, None, "csv", tmp_path / "i.csv", data_dir=data, interval="1m")
    with pytest.raises(ExportError, match="needs --interval"):
        export_series("mark", "BTCUSDT", None, None, "csv", tmp_path / "i.csv", data_dir=data)


def test_klinestore_export_what_on_the_command_line(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "mark.csv"
    proc = subprocess.run(klinestore_command("export", "--what", "mark", "--symbol", "BTCUSDT", "--interval", "1h",
                                             "--start", "2024-01-01", "--end", "2024-01-01T03:00Z", "--format", "csv",
                                             "--out", str(out), "--data-dir", str(data)),
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "exported 3 mark rows of BTCUSDT" in proc.stdout and len(out.read_text().splitlines()) == 4
    bad = subprocess.run(klinestore_command("export", "--what", "funding", "--symbol", "BTCUSDT", "--format", "binance",
                                            "--start", "2024-01-01", "--end", "2024-01-02",
                                            "--out", str(tmp_path / "x"), "--data-dir", str(data)),
                         env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "exports as parquet or csv" in bad.stderr
