"""Archives of the USD-M series: markPriceKlines, indexPriceKlines, fundingRate and aggTrades, checksummed,
downloaded from the simulator's archive host and imported into their datasets."""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import pytest

from klinestore import queries as kq
from klinestore.config import StorageConfig
from klinestore.core.intervals import MINUTE_MS
from klinestore.storage import ArchiveError, import_all, read_agg_trades, series_of
from simfixtures import SimFactory
from support import klinestore_command, subprocess_env

JUNE_2 = 1_717_286_400_000  # 2024-06-02T00:00Z
MAY_30 = JUNE_2 - 3 * 86_400_000


def download(data: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(klinestore_command("download", "--data-dir", str(data), "--archive-url", url,
                                             "--symbols", "BTCUSDT", *args),
                          env=subprocess_env(), capture_output=True, text=True, timeout=180)


def test_series_archives_are_downloaded_verified_and_equal_the_exchanges_truth(tmp_path: Path, sim_factory: SimFactory) -> None:
    sim = sim_factory(symbols=("BTCUSDT",), speed=1, seed=7, start_ms=JUNE_2, history_minutes=33 * 1440)
    data = tmp_path / "data"
    sim.inject({"kind": "archive_corrupt", "count": 1})
    refused = download(data, sim.rest_url, "--start", "2024-05-30", "--end", "2024-05-31", "--data", "indexPriceKlines")
    assert refused.returncode == 1 and "checksum" in refused.stderr.lower(), refused.stderr
    assert not (data / "index_bars").exists() or kq.sql("SELECT count(*) FROM index_bars", data_dir=data).item() == 0

    done = download(data, sim.rest_url, "--intervals", "1m", "--start", "2024-05-30", "--end", "2024-06-01",
                    "--data", "markPriceKlines,indexPriceKlines,fundingRate")
    assert done.returncode == 0, done.stderr
    for kind in ("mark", "index"):
        truth = {r[0]: tuple(float(v) for v in r[1:5]) for r in sim.truth_of("BTCUSDT", kind)}
        stored = kq.sql(f"SELECT epoch_ms(open_time), open, high, low, close, source FROM {kind}_bars_1m ORDER BY 1",
                        data_dir=data).rows()
        assert [r[0] for r in stored] == list(range(MAY_30, JUNE_2 - 86_400_000, MINUTE_MS)), kind
        assert all(r[1:5] == truth[r[0]] and r[5] == "import" for r in stored), kind
        hourly = {r[0]: tuple(float(v) for v in r[1:5]) for r in sim.truth_of("BTCUSDT", kind, "1h")}
        resampled = kq.sql(f"SELECT epoch_ms(open_time), open, high, low, close FROM {kind}_bars_1h", data_dir=data).rows()
        assert len(resampled) == 48 and all(r[1:] == hourly[r[0]] for r in resampled), kind  # resampled like bars
    funding = {f["fundingTime"]: float(f["fundingRate"]) for f in sim.truth_of("BTCUSDT", "funding")}
    stored = kq.sql("SELECT epoch_ms(funding_time), funding_rate, mark_price FROM funding ORDER BY 1", data_dir=data).rows()
    may = {t: r for t, r in funding.items() if 1_714_521_600_000 <= t < JUNE_2 - 86_400_000}
    assert {t: r for t, r, _ in stored} == may and len(may) == 93
    assert {m for _, _, m in stored} == {None}  # the archive has no mark price

    again = download(data, sim.rest_url, "--intervals", "1m", "--start", "2024-05-30", "--end", "2024-06-01",
                     "--data", "markPriceKlines")  # stored complete: not even fetched
    assert again.returncode == 0 and "2 already stored complete" in again.stdout, again.stdout


def test_aggtrades_archives_are_kept_as_trades_and_a_bad_funding_file_is_refused(tmp_path: Path, sim_factory: SimFactory) -> None:
    sim = sim_factory(symbols=("BTCUSDT",), speed=1, seed=7, start_ms=JUNE_2, history_minutes=2 * 1440)
    path = "/data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-06-01.zip"
    local = tmp_path / "archives" / path.lstrip("/")
    local.parent.mkdir(parents=True)
    local.write_bytes(urllib.request.urlopen(sim.rest_url + path, timeout=60).read())
    (local.parent / (local.name + ".CHECKSUM")).write_bytes(urllib.request.urlopen(sim.rest_url + path + ".CHECKSUM").read())
    data = tmp_path / "data"
    report = import_all([tmp_path / "archives"], data, StorageConfig(persist_aggtrades=True, resample_intervals=()))
    assert report.rows == 1440  # the day's 1m bars, built from the trades
    truth = [t for t in sim.truth_of("BTCUSDT", "aggTrades") if JUNE_2 - 86_400_000 <= t["T"] < JUNE_2]
    stored = read_agg_trades(data, "BTCUSDT")
    assert stored["agg_trade_id"].to_list() == [t["a"] for t in truth]
    assert stored["price"].to_list() == [float(t["p"]) for t in truth]

    flat = tmp_path / "flat"  # a markPriceKlines file outside the host's layout: named with --series
    flat.mkdir()
    mark_path = "/data/futures/um/daily/markPriceKlines/BTCUSDT/1m/BTCUSDT-1m-2024-06-01.zip"
    (flat / "BTCUSDT-1m-2024-06-01.zip").write_bytes(urllib.request.urlopen(sim.rest_url + mark_path, timeout=60).read())
    imported = subprocess.run(klinestore_command("import", "--series", "mark", str(flat), "--data-dir", str(data)),
                              env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    assert kq.sql("SELECT count(*) FROM mark_bars_1m", data_dir=data).item() == 1440
    assert kq.sql("SELECT count(*) FROM bars_1m", data_dir=data).item() == 1440  # the klines from the trades only

    bad = tmp_path / "bad" / "BTCUSDT-fundingRate-2024-05.csv"
    bad.parent.mkdir()
    bad.write_text("calc_time,funding_interval_hours,last_funding_rate\n1714521600000,8,0.0001\n1714550400000,8,lots\n")
    assert series_of(bad) == "funding"
    with pytest.raises(ArchiveError, match="line 3"):
        import_all([bad], data, StorageConfig())
    assert kq.sql("SELECT count(*) FROM funding", data_dir=data).item() == 0  # nothing of it stored
