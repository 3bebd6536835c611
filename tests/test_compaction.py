"""Compaction: the file count stays bounded, rows survive, closed months become one file."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from klinestore.config import StorageConfig
from klinestore.storage.layout import FileName, data_files, dataset_root, list_partitions
from klinestore.storage.reader import last_stored_open_time, read_bars
from klinestore.storage.store import BarStore
from storage_support import MINUTE, assert_one_row_per_key, bar, sql_rows

FEB = 1_706_745_600_000  # 2024-02-01


def files_per_partition(data_dir: Path) -> dict[str, int]:
    return {f"{iv}/{m}": len(data_files(p)) for iv, m, p in list_partitions(dataset_root(data_dir))}


def test_tiered_compaction_bounds_files_and_keeps_every_row(tmp_path: Path) -> None:
    config = StorageConfig(compaction_min_files=3, compaction_grace=0.0, resample_intervals=("5m",))
    most = 0
    with BarStore(tmp_path, config) as store:
        for i in range(120):
            store.append([bar(minute=i), bar("ETHUSDT", minute=i)])
            store.flush()
            if i % 5 == 4:
                report = store.compact()
                most = max(most, files_per_partition(tmp_path)["1m/2024-01"])
                assert report.max_files <= 2 * 4 + 1  # (F - 1) per generation, log_3(120) + 1 generations
    assert most <= 9
    assert read_bars(tmp_path, "BTCUSDT", "1m").height == 120
    rows = sql_rows(tmp_path)
    assert_one_row_per_key(rows) and rows.height == 240 + 48


def test_a_closed_month_becomes_one_file_per_writer(tmp_path: Path) -> None:
    config = StorageConfig(compaction_min_files=8, compaction_grace=0.0, resample_intervals=("5m",))
    jan_end = FEB - 30 * MINUTE
    with BarStore(tmp_path, config) as store:
        for i in range(30):
            store.append([bar(minute=i, t0=jan_end)])
            store.flush()
        store.append([bar(minute=i, t0=FEB) for i in range(5)])
        store.flush()
        store.compact()
    counts = files_per_partition(tmp_path)
    assert counts["1m/2024-01"] == 1 and counts["5m/2024-01"] == 1
    assert read_bars(tmp_path, "BTCUSDT", "1m").height == 35


def test_retired_files_stay_readable_for_the_grace_period(tmp_path: Path) -> None:
    config = StorageConfig(compaction_min_files=2, compaction_grace=0.3, resample_intervals=())
    with BarStore(tmp_path, config) as store:
        for i in range(4):
            store.append([bar(minute=i)])
            store.flush()
        report = store.compact()
        assert report.merged_files >= 2
        during = files_per_partition(tmp_path)["1m/2024-01"]
        assert during > 1  # inputs still there, next to the merged file
        assert sql_rows(tmp_path).height == 4  # and the dedup hides them
        time.sleep(0.4)
        assert store.compact().deleted_files == report.merged_files
    assert files_per_partition(tmp_path)["1m/2024-01"] == 1 and read_bars(tmp_path, "BTCUSDT", "1m").height == 4


def test_monthly_partitions_of_long_intervals_move_into_their_year(tmp_path: Path) -> None:
    """A dataset from before yearly partitions (1h in ``month=YYYY-MM``) reads the same, a later
    write into the year is seen as the newest, and compaction migrates the months into the year."""
    config = StorageConfig(compaction_min_files=8, compaction_grace=0.0, resample_intervals=("1h",))
    start = FEB - 120 * MINUTE
    with BarStore(tmp_path, config) as store:
        store.append([bar(s, minute=i, t0=start) for s in ("BTCUSDT", "ETHUSDT") for i in range(180)])
        store.flush()
    year = dataset_root(tmp_path) / "interval=1h" / "month=2024"
    (stored,) = [p for _, p in data_files(year)]
    table = pq.read_table(stored)
    stamp = FileName.parse(stored.name).stamp  # type: ignore[union-attr]
    for n, (month, low, high) in enumerate((("2024-01", start, FEB), ("2024-02", FEB, FEB + 3_600_000))):
        rows = table.filter((pc.field("open_time") >= pa.scalar(low, pa.timestamp("ms", "UTC")))
                            & (pc.field("open_time") < pa.scalar(high, pa.timestamp("ms", "UTC"))))
        legacy = year.with_name(f"month={month}")
        legacy.mkdir()
        pq.write_table(rows, legacy / FileName(stamp + n + 1, "s0000", 0).name)
    stored.unlink()
    before = read_bars(tmp_path, "BTCUSDT", "1h")
    assert before.height == 3 and sql_rows(tmp_path, "interval = '1h'").height == 6
    assert last_stored_open_time(tmp_path, "BTCUSDT", "1h", wal=False) == FEB + 3_600_000 - 3_600_000

    with BarStore(tmp_path, config) as store:  # two more hours: written into the year, the newest
        store.append([bar(s, minute=i, t0=start) for s in ("BTCUSDT", "ETHUSDT") for i in range(180, 300)])
        store.flush()
        assert last_stored_open_time(tmp_path, "BTCUSDT", "1h", wal=False) == FEB + 2 * 3_600_000
        store.compact()
    assert files_per_partition(tmp_path)["1h/2024"] == 3  # each month's file moved in, beside the new flush
    assert not any(k.startswith("1h/2024-") for k in files_per_partition(tmp_path))  # the months are gone
    after = read_bars(tmp_path, "BTCUSDT", "1h")
    assert after.height == 5 and after.head(3).equals(before)
    rows = sql_rows(tmp_path, "interval = '1h'")
    assert_one_row_per_key(rows) and rows.height == 10
