"""Archive import: formats, checksums, bad files (named with their line, nothing written), idempotence."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from klinestore.config import StorageConfig
from klinestore.storage import ArchiveError
from klinestore.storage.importer import import_archives
from klinestore.storage.reader import read_bars
from storage_support import MINUTE, T0, assert_one_row_per_key, kline_csv, sql_rows, write_zip
from support import klinestore_command, subprocess_env

CONFIG = StorageConfig()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "state" not in p.parts)


def test_header_and_no_header_daily_and_monthly_import_alike(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_zip(src / "BTCUSDT-1m-2024-01-01.zip", kline_csv(header=True))
    (src / "ETHUSDT-1m-2024-01.csv").write_text(kline_csv())
    report = import_archives([src], tmp_path / "data", CONFIG)
    assert report.files == 2 and report.rows == report.written == 2880
    btc, eth = (read_bars(tmp_path / "data", s, "1m") for s in ("BTCUSDT", "ETHUSDT"))
    assert btc.drop("symbol").equals(eth.drop("symbol")) and btc.height == 1440
    assert read_bars(tmp_path / "data", "BTCUSDT", "1h").height == 24
    assert read_bars(tmp_path / "data", "BTCUSDT", "4h")["is_complete"].all()


def test_microsecond_timestamps_are_detected_per_value(tmp_path: Path) -> None:
    (tmp_path / "BTCUSDT-1m-2024-01-01.csv").write_text(kline_csv(minutes=60, micros=True))
    import_archives([tmp_path / "BTCUSDT-1m-2024-01-01.csv"], tmp_path / "data", CONFIG, market="spot")
    bars = read_bars(tmp_path / "data", "BTCUSDT", "1m", market="spot")
    assert bars["open_time"].dt.epoch("ms").to_list() == [T0 + i * MINUTE for i in range(60)]
    assert (bars["close_time"].dt.epoch("ms") - bars["open_time"].dt.epoch("ms") == MINUTE - 1).all()
    assert read_bars(tmp_path / "data", "BTCUSDT", "1m").is_empty()  # spot is its own dataset


def test_importing_the_same_file_twice_changes_nothing(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "BTCUSDT-1m-2024-01-01.zip", kline_csv())
    import_archives([path], tmp_path / "data", CONFIG)
    before = {p: p.read_bytes() for p in files_under(tmp_path / "data")}
    again = import_archives([path], tmp_path / "data", CONFIG)
    assert again.written == again.resampled == 0 and again.unchanged == 1440
    assert {p: p.read_bytes() for p in files_under(tmp_path / "data")} == before


def test_a_5m_archive_beats_the_5m_bars_resampled_from_imported_minutes(tmp_path: Path) -> None:
    (tmp_path / "BTCUSDT-1m-2024-01-01.csv").write_text(kline_csv(minutes=60))
    five = "".join(f"{T0 + i * 5 * MINUTE},7.00,8.00,6.00,7.50,2.000,{T0 + (i + 1) * 5 * MINUTE - 1},15.0,9,1.0,7.5,0\n"
                   for i in range(4))  # the first 20 minutes only, with other prices
    (tmp_path / "BTCUSDT-5m-2024-01-01.csv").write_text(five)
    report = import_archives([tmp_path], tmp_path / "data", CONFIG)
    assert report.rows == 64
    bars = read_bars(tmp_path / "data", "BTCUSDT", "5m")
    assert bars.height == 12 and bars["open"].to_list() == [7.0] * 4 + bars["open"].to_list()[4:]
    assert bars["source"].to_list() == ["import"] * 4 + ["resample"] * 8 and 7.0 not in bars["open"].to_list()[4:]
    assert_one_row_per_key(sql_rows(tmp_path / "data"))


def test_a_corrected_bar_rewrites_it_and_its_buckets_only(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-1m-2024-01-01.csv"
    path.write_text(kline_csv())
    import_archives([path], tmp_path / "data", CONFIG)
    before = {iv: read_bars(tmp_path / "data", "BTCUSDT", iv) for iv in ("5m", "15m", "1h", "4h")}
    lines = kline_csv().splitlines()
    volume = float(lines[7].split(",")[5])
    lines[7] = ",".join(f if i != 5 else f"{volume + 0.125:.3f}" for i, f in enumerate(lines[7].split(",")))
    path.write_text("\n".join(lines) + "\n")
    report = import_archives([path], tmp_path / "data", CONFIG)
    assert (report.written, report.unchanged, report.resampled) == (1, 1439, 4)  # 00:07 in 5m, 15m, 1h, 4h
    assert read_bars(tmp_path / "data", "BTCUSDT", "1m")["volume"][7] == volume + 0.125
    for interval, old in before.items():
        new = read_bars(tmp_path / "data", "BTCUSDT", interval)
        changed = new.filter(new["volume"] != old["volume"])
        bucket = 1 if interval == "5m" else 0  # the bucket holding 00:07
        assert changed.height == 1 and changed["open_time"][0] == new["open_time"][bucket]
        assert changed["volume"][0] == pytest.approx(old["volume"][bucket] + 0.125)
    assert_one_row_per_key(sql_rows(tmp_path / "data"))


def test_an_import_failing_after_row_groups_were_encoded_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    import klinestore.storage.writer

    monkeypatch.setattr(klinestore.storage.writer, "ROW_GROUP_ROWS", 512)  # every symbol's day encodes row groups at once
    monkeypatch.setattr(klinestore.storage.writer, "MIN_ROW_GROUP_ROWS", 64)
    for symbol in ("AAAUSDT", "BBBUSDT", "CCCUSDT"):
        write_zip(tmp_path / f"{symbol}-1m-2024-01-01.zip", kline_csv(), checksum=False)
    lines = kline_csv().splitlines()
    lines[700] = lines[700].replace(",", ";", 1)
    (tmp_path / "ZZZUSDT-1m-2024-01-01.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ArchiveError):
        import_archives([tmp_path], tmp_path / "data", CONFIG)
    assert not [p for p in files_under(tmp_path / "data") if p.suffix in (".parquet", ".tmp")]
    (tmp_path / "ZZZUSDT-1m-2024-01-01.csv").unlink()
    import_archives([tmp_path], tmp_path / "data", CONFIG)  # and the good files alone import whole
    files = list((tmp_path / "data" / "bars" / "interval=1m").rglob("*.parquet"))
    assert len(files) == 1 and pq.ParquetFile(files[0]).metadata.num_row_groups == 9  # 4 320 rows in 512s
    for symbol in ("AAAUSDT", "BBBUSDT", "CCCUSDT"):
        assert read_bars(tmp_path / "data", symbol, "1m").height == 1440
    assert_one_row_per_key(sql_rows(tmp_path / "data"))


@pytest.mark.parametrize(
    ("mutate", "line", "message"),
    [
        (lambda lines: lines.__setitem__(100, ",".join(f if i != 1 else "1x0" for i, f in enumerate(lines[100].split(",")))), 101, "not a number"),
        (lambda lines: lines.__setitem__(7, lines[7] + ",9"), 8, "fields"),
        (lambda lines: lines.__setitem__(50, lines[49]), 51, "open time not after"),
        (lambda lines: lines.__setitem__(20, lines[20].replace(str(T0 + 20 * MINUTE), str(T0 + 20 * MINUTE + 5), 1)), 21, "start of a 1m bar"),
        (lambda lines: lines.__setitem__(30, ",".join(f if i != 2 else "1.00" for i, f in enumerate(lines[30].split(",")))), 31, "low..high"),
        (lambda lines: lines.__setitem__(40, ",".join(f if i != 9 else "NaN" for i, f in enumerate(lines[40].split(",")))), 41, "negative volume"),
        (lambda lines: lines.__setitem__(60, ",".join(f if i != 2 else "nan" for i, f in enumerate(lines[60].split(",")))), 61, "finite"),
    ],
)
def test_a_bad_line_stops_the_import_naming_file_and_line_and_writes_nothing(tmp_path, mutate, line, message) -> None:
    good = write_zip(tmp_path / "ETHUSDT-1m-2024-01-01.zip", kline_csv())
    lines = kline_csv().splitlines()
    mutate(lines)
    bad = tmp_path / "BTCUSDT-1m-2024-01-02.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ArchiveError) as caught:
        import_archives([good, bad], tmp_path / "data", CONFIG)
    assert caught.value.path == str(bad) and caught.value.line == line and message in str(caught.value)
    assert not [p for p in files_under(tmp_path / "data") if p.suffix in (".parquet", ".tmp")]


def test_bad_checksum_and_truncated_zip_are_refused(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "BTCUSDT-1m-2024-01-01.zip", kline_csv())
    path.with_name(path.name + ".CHECKSUM").write_text("0" * 64 + "  BTCUSDT-1m-2024-01-01.zip\n")
    with pytest.raises(ArchiveError, match="checksum mismatch"):
        import_archives([path], tmp_path / "data", CONFIG)
    truncated = tmp_path / "ETHUSDT-1m-2024-01-01.zip"
    truncated.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(ArchiveError, match="zip"):
        import_archives([truncated], tmp_path / "data", CONFIG)


@pytest.mark.parametrize("fast_inflate", [True, False])
def test_zip_members_inflate_alike_and_a_bad_crc_is_refused(tmp_path: Path, monkeypatch, fast_inflate: bool) -> None:
    """With ISA-L (when installed) or zipfile's zlib: the same bars, and the CRC-32 checked."""
    import klinestore.storage.archive

    if not fast_inflate:
        monkeypatch.setattr(klinestore.storage.archive, "_isal_zlib", None)
    text = kline_csv(minutes=30)
    good = write_zip(tmp_path / "ETHUSDT-1m-2024-01-01.zip", text, checksum=False)
    assert import_archives([good], tmp_path / "data", CONFIG).written == 30
    assert read_bars(tmp_path / "data", "ETHUSDT", "1m").height == 30
    bad = write_zip(tmp_path / "SOLUSDT-1m-2024-01-01.zip", text, checksum=False)
    patched = bytearray(bad.read_bytes())
    local = zipfile.ZipFile(bad).infolist()[0].header_offset + 14  # CRC-32 in the local header
    central = patched.rindex(b"PK\x01\x02") + 16  # and in the central directory
    for offset in (local, central):
        patched[offset] ^= 0xFF
    bad.write_bytes(bytes(patched))
    with pytest.raises(ArchiveError, match="zip"):
        import_archives([bad], tmp_path / "data", CONFIG)


def test_blank_lines_inside_a_file_are_refused_and_trailing_ones_ignored(tmp_path: Path) -> None:
    lines = kline_csv(minutes=10).splitlines()
    trailing = tmp_path / "BTCUSDT-1m-2024-01-01.csv"
    trailing.write_text("\r\n".join(lines) + "\r\n\r\n\n")
    assert import_archives([trailing], tmp_path / "data", CONFIG).written == 10
    inside = tmp_path / "ETHUSDT-1m-2024-01-01.csv"
    inside.write_text("\n".join(lines[:4] + [""] + lines[4:]) + "\n")
    with pytest.raises(ArchiveError) as caught:
        import_archives([inside], tmp_path / "data", CONFIG)
    assert caught.value.line == 5 and "blank line" in str(caught.value)


def test_the_unused_last_field_is_counted_but_not_read(tmp_path: Path) -> None:
    """The klines' 12th field ("ignore") is skipped by the parser: an empty one is accepted, a
    missing one is still a line with too few fields."""
    lines = kline_csv(minutes=3).splitlines()
    empty = tmp_path / "BTCUSDT-1m-2024-01-01.csv"
    empty.write_text("\n".join(line.rsplit(",", 1)[0] + "," for line in lines) + "\n")
    assert import_archives([empty], tmp_path / "data", CONFIG).written == 3
    short = tmp_path / "ETHUSDT-1m-2024-01-01.csv"
    short.write_text("\n".join(lines[:1] + [lines[1].rsplit(",", 1)[0]] + lines[2:]) + "\n")
    with pytest.raises(ArchiveError) as caught:
        import_archives([short], tmp_path / "data", CONFIG)
    assert caught.value.line == 2 and "expected 12 fields, found 11" in str(caught.value)


def test_symbol_from_the_file_name_is_validated(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (tmp_path / "x-1m-2024-01-01.csv").write_text(kline_csv(minutes=5))
    with pytest.raises(ArchiveError, match="invalid symbol"):
        import_archives([nested / ".." / ".." / "x-1m-2024-01-01.csv"], tmp_path / "data", CONFIG)
    (tmp_path / "export.csv").write_text(kline_csv(minutes=5))
    with pytest.raises(ArchiveError, match="--symbol"):
        import_archives([tmp_path / "export.csv"], tmp_path / "data", CONFIG)
    report = import_archives([tmp_path / "export.csv"], tmp_path / "data", CONFIG, symbol="solusdt", interval="1m")
    assert report.written == 5 and read_bars(tmp_path / "data", "SOLUSDT", "1m").height == 5


def agg_trades_csv(header: bool) -> str:
    head = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n" if header else ""
    rows = [
        (1, "100.50", "0.123", 10, 12, T0 + 1_000, "true"),
        (2, "101.25", "1.001", 13, 13, T0 + 30_000, "false"),
        (3, "99.00", "2", 14, 18, T0 + 2 * MINUTE + 5, "False"),
    ]
    return head + "".join(",".join(map(str, r)) + "\n" for r in rows)


@pytest.mark.parametrize("header", [True, False])
def test_agg_trades_archives_become_1m_bars(tmp_path: Path, header: bool) -> None:
    path = write_zip(tmp_path / "BTCUSDT-aggTrades-2024-01-01.zip", agg_trades_csv(header))
    import_archives([path], tmp_path / "data", CONFIG)
    bars = read_bars(tmp_path / "data", "BTCUSDT", "1m").to_dicts()
    assert [b["trades"] for b in bars] == [4, 0, 5]
    assert (bars[0]["open"], bars[0]["high"], bars[0]["low"], bars[0]["close"]) == (100.5, 101.25, 100.5, 101.25)
    assert bars[0]["volume"] == 1.124 and bars[0]["quote_volume"] == 113.71275
    assert bars[0]["taker_buy_volume"] == 1.001 and bars[0]["taker_buy_quote_volume"] == 101.35125
    assert bars[1]["volume"] == 0 and bars[1]["open"] == bars[1]["close"] == 101.25  # empty: previous close
    assert bars[2]["taker_buy_volume"] == 2.0


@pytest.mark.real_data
def test_real_spot_archives_imported_and_resampled_equal_the_exchange_1h(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "spot/klines/BTCUSDT/1m"
    import_archives([src], tmp_path, CONFIG, market="spot")
    mine = sql_rows(tmp_path, "interval = '1h'", market="spot").with_columns(
        pl.col("open_time", "close_time").dt.epoch("ms")).sort("open_time")
    hours = pl.read_csv(shared_data / "spot/klines/BTCUSDT/1h/BTCUSDT-1h-2023-01.csv", infer_schema_length=0)
    theirs = hours.filter(pl.col("open_time").cast(pl.Int64) < mine["open_time"].max() + 1).rename({"count": "trades"})
    columns = [c for c in theirs.columns if c != "ignore"]
    assert mine.height == 168 and mine.select(columns).equals(theirs.select(columns).cast(mine.select(columns).schema))


def test_cli_import_and_compact(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for day in range(1, 4):
        write_zip(src / f"BTCUSDT-1m-2024-01-0{day}.zip", kline_csv(T0 + (day - 1) * 1440 * MINUTE))
    data = tmp_path / "data"
    env = subprocess_env()
    done = subprocess.run(klinestore_command("import", str(src), "--data-dir", str(data)), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "4,320 bars read" in done.stdout
    compacted = subprocess.run(klinestore_command("compact", "--data-dir", str(data)), env=env,
                               capture_output=True, text=True, timeout=120)
    assert compacted.returncode == 0, compacted.stderr
    rows = sql_rows(data)
    assert_one_row_per_key(rows) and rows.filter(pl.col("interval") == "1m").height == 4320
    bad = tmp_path / "BTCUSDT-1m-2024-01-09.csv"
    bad.write_text("not,a,kline\n")
    failed = subprocess.run(klinestore_command("import", str(bad), "--data-dir", str(data)), env=env,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and str(bad) in failed.stderr
    shutil.rmtree(src)


@pytest.mark.parametrize("command", ["import", "compact"])
def test_storage_commands_have_help_and_examples(command: str) -> None:
    from klinestore.cli import command_module

    module = command_module(command)
    assert module.HELP and module.DESCRIPTION and f"klinestore {command}" in module.EXAMPLES
    shown = subprocess.run(klinestore_command(command, "--help"), env=subprocess_env(), capture_output=True, text=True)
    assert shown.returncode == 0 and "examples:" in shown.stdout and "--data-dir" in shown.stdout


def lying_zip(path: Path, inflated: int, claimed: int = 1000) -> Path:
    """A zip whose one member claims ``claimed`` bytes and inflates to ``inflated`` (zeros)."""
    name = path.name.replace(".zip", ".csv").encode()
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 24)
    packed = b"".join(squeeze.compress(chunk) for _ in range(inflated // len(chunk))) + squeeze.flush()
    crc = zlib.crc32(chunk[:claimed])
    fields = struct.pack("<HHHHHIII", 20, 0, 8, 0, 0, crc, len(packed), claimed)
    local = b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name
    central = (b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, 0)
               + name)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(central), len(local) + len(packed), 0)
    path.write_bytes(local + packed + central + end)
    return path


@pytest.mark.parametrize("fast_inflate", [True, False])
def test_a_zip_whose_header_lies_is_refused_without_inflating_it(tmp_path: Path, fast_inflate: bool) -> None:
    """Issue 14 case 3: a member claiming 1 000 bytes that inflates to 512 MiB used to be
    inflated whole in memory before the size check refused it; now inflation stops at the claim."""
    bomb = lying_zip(tmp_path / "BTCUSDT-1m-2024-01-01.zip", 512 << 20)
    assert bomb.stat().st_size < 1 << 20
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across execve, so a child of a big
    # test worker would report the worker's peak.
    script = ("import re, sys\nimport klinestore.storage.archive as a\nfrom klinestore.cli import main\n"
              f"a._isal_zlib = a._isal_zlib if {fast_inflate} else None\ncode = main(sys.argv[1:])\n"
              "status = open('/proc/self/status').read()\n"
              "print('maxrss', re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script, "import", str(bomb), "--data-dir", str(tmp_path / "data")],
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "inflates to more than the 1000 bytes its header claims" in done.stderr
    peak = int(done.stdout.split("maxrss")[1]) << 10  # KiB on Linux
    assert peak < 400 << 20, f"peak RSS {peak >> 20} MiB"
