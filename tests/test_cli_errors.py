"""Mistakes a trader makes on the command line get one line naming the mistake and exit 1, not a gap report."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from klinestore.cli import main
from queries_support import build_dataset
from support import klinestore_command, subprocess_env

SPOT_1M = Path("spot/klines/BTCUSDT/1m")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BTCUSDT 1m (and its resamples) for 2024-01-01 in the USD-M dataset."""
    return build_dataset(tmp_path_factory.mktemp("cli-errors") / "data", ("BTCUSDT",), 1440)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"klinestore {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def export_args(data_dir: Path, out: Path, symbol: str = "BTCUSDT", interval: str = "1m",
                start: str = "2024-01-01", end: str = "2024-01-02") -> list[str]:
    return ["export", "--symbol", symbol, "--interval", interval, "--start", start, "--end", end,
            "--format", "csv", "--out", str(out), "--data-dir", str(data_dir)]


def test_a_data_directory_that_does_not_exist_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-dir"
    for argv in (export_args(missing, tmp_path / "x.csv"),
                 ["chart", "--symbol", "BTCUSDT", "--interval", "1m", "--out", str(tmp_path / "c.png"),
                  "--data-dir", str(missing)],
                 ["list", "--data-dir", str(missing)], ["status", "--data-dir", str(missing)],
                 ["dataqual", "--data-dir", str(missing)], ["compact", "--data-dir", str(missing)],
                 ["sql", "SELECT 1", "--data-dir", str(missing)]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 1, argv
        assert f"no data directory at {missing}" in one_error_line(err, argv[0])
    assert not missing.exists() and not list(tmp_path.iterdir())


def test_a_symbol_or_interval_never_stored_is_named_not_a_gap_report(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, *export_args(store, tmp_path / "x.csv", symbol="SOLUSDT"))
    line = one_error_line(err, "export")
    assert code == 1 and "no SOLUSDT 1m bar is stored" in line and "stored symbols: BTCUSDT" in line
    assert "missing" not in line
    code, _, err = run_cli(capsys, *export_args(store, tmp_path / "x.csv", interval="1d"))
    line = one_error_line(err, "export")
    assert code == 1 and "no BTCUSDT 1d bar is stored" in line and "BTCUSDT is stored at 1m, 5m, 15m, 1h, 4h" in line
    code, _, err = run_cli(capsys, "chart", "--symbol", "ETHUSDT", "--interval", "1h", "--out",
                           str(tmp_path / "c.png"), "--data-dir", str(store))
    assert code == 1 and "no ETHUSDT 1h bar is stored" in one_error_line(err, "chart")
    assert not list(tmp_path.iterdir())


def test_a_gap_in_a_stored_series_is_still_a_gap_report(store: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, *export_args(store, tmp_path / "x.csv", start="2024-01-01", end="2024-01-03"))
    assert code == 3 and "1,440 missing 1m bars for BTCUSDT" in err


def test_a_reversed_range_is_named(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, *export_args(store, tmp_path / "x.csv", start="2024-01-02", end="2024-01-01"))
    assert code == 1 and "reversed range: --start 2024-01-02 00:00 is not before --end 2024-01-01 00:00" in (
        one_error_line(err, "export"))
    code, _, err = run_cli(capsys, "chart", "--symbol", "BTCUSDT", "--interval", "1m", "--start", "2024-01-02",
                           "--end", "2024-01-01", "--out", str(tmp_path / "c.png"), "--data-dir", str(store))
    assert code == 1 and "reversed range" in one_error_line(err, "chart")


def test_a_chart_without_a_bar_in_its_range_fails(store: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "chart", "--symbol", "BTCUSDT", "--interval", "1h", "--start", "2023-06-01",
                           "--end", "2023-06-02", "--out", str(tmp_path / "c.png"), "--data-dir", str(store))
    line = one_error_line(err, "chart")
    assert code == 1 and "no BTCUSDT 1h bar in [2023-06-01 00:00, 2023-06-02 00:00)" in line
    assert "stored bars open from 2024-01-01 00:00 to 2024-01-01 23:00" in line
    assert not (tmp_path / "c.png").exists()


def test_a_chart_without_a_range_shows_the_last_stored_day(store: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "chart", "--symbol", "BTCUSDT", "--interval", "15m", "--out",
                           str(tmp_path / "c.png"), "--data-dir", str(store))
    assert code == 0 and "96 candles of BTCUSDT 15m [2024-01-01 00:00, 2024-01-02 00:00)" in out
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_an_import_that_finds_no_archive_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no archive here")
    code, _, err = run_cli(capsys, "import", str(tmp_path / "empty"), "--data-dir", str(tmp_path / "data"))
    assert code == 1 and f"no archive found in {tmp_path / 'empty'}" in one_error_line(err, "import")
    assert not (tmp_path / "data").exists()


def test_an_archive_of_the_other_market_is_refused_by_its_path(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spot = shared_data / SPOT_1M
    code, _, err = run_cli(capsys, "import", str(spot), "--data-dir", str(tmp_path / "data"))
    line = one_error_line(err, "import")
    assert code == 1 and "is a spot archive (its path says so), not USD-M futures" in line
    assert "import it with --market spot" in line and not (tmp_path / "data").exists()
    futures = tmp_path / "data.binance.vision" / "data" / "futures" / "um" / "daily" / "klines" / "BTCUSDT" / "1m"
    futures.mkdir(parents=True)
    shutil.copy(spot / "BTCUSDT-1m-2023-01-01.zip", futures)
    code, _, err = run_cli(capsys, "import", str(futures.parent), "--market", "spot", "--data-dir", str(tmp_path / "data"))
    assert code == 1 and "is a USD-M futures archive" in one_error_line(err, "import")
    assert "import it with --market um" in err and not (tmp_path / "data").exists()
    code, out, _ = run_cli(capsys, "import", str(futures), "--data-dir", str(tmp_path / "data"))
    assert code == 0 and "imported 1 files" in out


@pytest.mark.parametrize("statement", [
    "CREATE TABLE t (a INT)", "DROP VIEW bars", "INSERT INTO gaps SELECT * FROM gaps", "UPDATE gaps SET reason = ''",
    "DELETE FROM gaps", "ALTER VIEW bars RENAME TO b", "SET threads = 1",
])
def test_sql_refuses_every_statement_that_is_not_a_read(store: Path, statement: str) -> None:
    result = subprocess.run(klinestore_command("sql", statement, "--data-dir", str(store)), env=subprocess_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert "is not allowed" in one_error_line(result.stderr, "sql")


def test_chart_market_spot_draws_what_import_market_spot_stored(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert main(["import", str(shared_data / SPOT_1M), "--market", "spot", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "chart", "--market", "spot", "--symbol", "BTCUSDT", "--interval", "1m",
                           "--start", "2023-01-02", "--end", "2023-01-03", "--out", str(tmp_path / "s.png"),
                           "--data-dir", str(data))
    assert code == 0 and "1,440 candles of BTCUSDT 1m [2023-01-02 00:00, 2023-01-03 00:00)" in out
    code, _, err = run_cli(capsys, "chart", "--symbol", "BTCUSDT", "--interval", "1m", "--out",
                           str(tmp_path / "u.png"), "--data-dir", str(data))
    assert code == 1 and "BTCUSDT is in the spot dataset (add --market spot)" in one_error_line(err, "chart")
