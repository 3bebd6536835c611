"""klinestore download against the simulator's archive host: verified, imported, skipped when stored, refused when corrupt."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from klinestore.ingest.protocol.archive import ArchiveRef, checksum_text, parse_checksum, parse_path, plan
from klinestore.queries.api import sql
from simfixtures import get, post
from support import klinestore_command, subprocess_env

DAY = date(2024, 1, 1)


@pytest.fixture(scope="module")
def sim() -> Iterator[dict[str, str]]:
    """``klinestore sim`` at 2024-01-03 00:00 with three days of history: 2023-12-31 .. 2024-01-02 are archived."""
    proc = subprocess.Popen(
        klinestore_command("sim", "--port", "0", "--symbols", "BTCUSDT,ETHUSDT", "--start", "2024-01-03T00:00Z",
                           "--history-minutes", "4320", "--speed", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=subprocess_env(),
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def download(data: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        klinestore_command("download", "--data-dir", str(data), "--archive-url", url, *args),
        env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )


def test_the_archive_layout_paths_checksums_and_plan() -> None:
    ref = ArchiveRef("klines", "BTCUSDT", "1m", DAY)
    assert ref.path == "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip"
    assert parse_path(ref.path) == (ref, False) and parse_path(ref.path + ".CHECKSUM") == (ref, True)
    monthly = ArchiveRef("klines", "BTCUSDT", "1h", DAY, monthly=True)
    assert monthly.path == "/data/futures/um/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01.zip"
    assert parse_path(monthly.path) == (monthly, False)
    assert parse_path("/data/futures/um/daily/klines/BTCUSDT/1m/ETHUSDT-1m-2024-01-01.zip") is None
    assert parse_path("/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-13-01.zip") is None
    assert parse_checksum(checksum_text("ab" * 32, ref.name)) == "ab" * 32 and parse_checksum("<html>") is None
    refs = plan(["BTCUSDT"], ["1m"], ["klines"], date(2023, 12, 30), date(2024, 3, 5), date(2024, 3, 3))
    assert [(r.label, r.monthly) for r in refs] == [
        ("2023-12-30", False), ("2023-12-31", False), ("2024-01", True), ("2024-02", True),
        ("2024-03-01", False), ("2024-03-02", False)]  # 03-03 is today: not published yet
    assert len(plan(["BTCUSDT", "btcusdt"], ["1m", "1m"], ["klines"], DAY, date(2024, 1, 3), date(2024, 2, 1))) == 2


def test_download_verifies_imports_and_matches_the_exchange(sim: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = download(data, sim["archive"], "--symbols", "BTCUSDT", "--intervals", "1m", "--start", "2024-01-01",
                    "--end", "2024-01-03")
    assert done.returncode == 0, done.stderr
    assert "2 archives for 1 symbols: 0 already stored complete, 2 downloaded" in done.stdout
    truth = get(sim["rest"] + "/sim/truth?symbol=BTCUSDT&interval=1m")[2]
    expected = [(r[0], float(r[4]), float(r[5])) for r in truth if 1_704_067_200_000 <= r[0] < 1_704_240_000_000]
    stored = sql("SELECT epoch_ms(open_time), close, volume FROM bars_1m ORDER BY 1", data_dir=data).rows()
    assert len(stored) == 2880 and stored == expected
    again = download(data, sim["archive"], "--symbols", "BTCUSDT", "--intervals", "1m", "--start", "2024-01-01",
                     "--end", "2024-01-03")
    assert again.returncode == 0 and "2 already stored complete, 0 downloaded" in again.stdout


def test_a_corrupt_archive_is_refused_naming_its_checksum_and_nothing_is_stored(
    sim: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    assert post(sim["rest"] + "/sim/faults", {"kind": "archive_corrupt"})[0] == 200
    refused = download(data, sim["archive"], "--symbols", "ETHUSDT", "--intervals", "1h", "--start", "2023-12-31",
                       "--end", "2024-01-01")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    line = next(x for x in refused.stderr.splitlines() if x.startswith("klinestore download: error:"))
    assert "ETHUSDT-1h-2023-12-31.zip: sha256" in line and "does not match its .CHECKSUM" in line
    assert "nothing of ETHUSDT-1h-2023-12-31.zip was stored" in line
    assert not (data / "bars").exists() and not list((data / "downloads").rglob("*.zip"))
    retried = download(data, sim["archive"], "--symbols", "ETHUSDT", "--intervals", "1h", "--start", "2023-12-31",
                       "--end", "2024-01-01")
    assert retried.returncode == 0 and "1 downloaded" in retried.stdout


def test_an_interrupted_download_resumes_from_the_verified_archives(sim: dict[str, str], tmp_path: Path) -> None:
    first = tmp_path / "first"
    args = ("--symbols", "ETHUSDT", "--intervals", "1m", "--start", "2024-01-01", "--end", "2024-01-03")
    assert download(first, sim["archive"], *args).returncode == 0
    second = tmp_path / "second"  # downloaded, killed before the import: the archives are there, no bar is
    shutil.copytree(first / "downloads", second / "downloads")
    resumed = download(second, "http://127.0.0.1:9", *args)  # nothing left to fetch: the host is not even asked
    assert resumed.returncode == 0, resumed.stderr
    assert "0 downloaded, 2 verified earlier" in resumed.stdout and "imported 2,880 bars" in resumed.stdout


def test_mistakes_are_one_line(tmp_path: Path) -> None:
    for args, words in ((("--start", "2024-01-03", "--end", "2024-01-01"), "is not after --start"),
                        (("--start", "2024-01-01", "--end", "2024-01-02", "--data", "fundingRates"), "unknown kind"),
                        (("--start", "2024-01-01", "--end", "2024-01-02", "--data", "fundingRate"),
                         "fundingRate: a month's after the month ends"),
                        (("--start", "01/01/2024", "--end", "2024-01-02"), "expected a date"),
                        (("--start", "2024-01-01", "--end", "2024-01-02", "--archive-url", "http://127.0.0.1:9"),
                         "check the network, a proxy, or --archive-url")):
        result = subprocess.run(klinestore_command("download", "--symbols", "BTCUSDT", "--data-dir", str(tmp_path),
                                                   *args), env=subprocess_env(), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 1 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_whole_month_comes_as_one_monthly_archive(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        klinestore_command("sim", "--port", "0", "--symbols", "BTCUSDT", "--start", "2024-02-01T00:00Z",
                           "--history-minutes", str(31 * 1440 + 60), "--speed", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=subprocess_env(),
    )
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        done = download(tmp_path / "data", urls["archive"], "--symbols", "BTCUSDT", "--intervals", "1h",
                        "--start", "2024-01-01", "--end", "2024-02-01")
        assert done.returncode == 0, done.stderr
        assert "1 archives for 1 symbols: 0 already stored complete, 1 downloaded" in done.stdout
        assert list((tmp_path / "data" / "downloads").rglob("*.zip"))[0].name == "BTCUSDT-1h-2024-01.zip"
        truth = [r[0] for r in get(urls["rest"] + "/sim/truth?symbol=BTCUSDT&interval=1h")[2]
                 if 1_704_067_200_000 <= r[0] < 1_706_745_600_000]
        stored = sql("SELECT epoch_ms(open_time) FROM bars_1h ORDER BY 1", data_dir=tmp_path / "data").rows()
        assert len(stored) == 744 and [t for (t,) in stored] == truth
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_aggtrades_archives_build_the_same_1m_bars_as_the_exchange(sim: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = download(data, sim["archive"], "--symbols", "BTCUSDT", "--data", "aggTrades", "--start", "2024-01-01",
                    "--end", "2024-01-02")
    assert done.returncode == 0, done.stderr
    assert list((data / "downloads").rglob("*.zip"))[0].name == "BTCUSDT-aggTrades-2024-01-01.zip"
    truth = get(sim["rest"] + "/sim/truth?symbol=BTCUSDT&interval=1m")[2]
    expected = [(r[0], float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), r[8]) for r in truth
                if 1_704_067_200_000 <= r[0] < 1_704_153_600_000 and r[8] > 0]
    stored = sql("SELECT epoch_ms(open_time), open, high, low, close, volume, trades FROM bars_1m "
                 "WHERE trades > 0 ORDER BY 1", data_dir=data).rows()
    assert len(stored) > 1000 and stored == expected
