"""Writer: streamed partition files (row groups as they fill, symbol order), unique sorted partitions."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from klinestore.storage.errors import DatasetError
from klinestore.storage.frames import TIME, from_bars, to_public, version_expr, with_version
from klinestore.storage.layout import IMPORT_WRITER, Stamper, dataset_root
from klinestore.storage.reader import read_bars
from klinestore.storage.txn import Publish
from klinestore.storage.writer import FILE_SCHEMA, PartitionFiles, row_group_rows, to_arrow, unique_sorted
from storage_support import MINUTE, T0, bar


def day_of(symbol: str, days: int = 1) -> pl.DataFrame:
    """One symbol's 1m bars from T0 (sorted, versioned), crossing into February when long enough."""
    bars = [bar(symbol, i, t0=T0 + 30 * 1440 * MINUTE) for i in range(days * 1440)]
    return from_bars(bars, [1] * len(bars))


def test_partition_files_stream_row_groups_across_months_and_round_trip(tmp_path: Path, monkeypatch) -> None:
    import klinestore.storage.writer

    monkeypatch.setattr(klinestore.storage.writer, "ROW_GROUP_ROWS", 1000)
    publish = Publish(tmp_path, IMPORT_WRITER, Stamper(IMPORT_WRITER))
    frames = {s: day_of(s, days=2) for s in ("AAAUSDT", "BBBUSDT")}  # Jan 31 and Feb 1
    with ThreadPoolExecutor(2) as pool:
        files = PartitionFiles(publish, dataset_root(tmp_path), pool)
        for frame in frames.values():
            files.add(frame)
        assert files.close() == 2 * 2880
    publish.commit()
    paths = sorted(dataset_root(tmp_path).glob("interval=1m/month=*/*.parquet"))
    assert [p.parent.name for p in paths] == ["month=2024-01", "month=2024-02"]
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        assert meta.num_rows == 2880 and meta.num_row_groups == 3  # 1000 + 1000 + 880
    for symbol, frame in frames.items():
        assert read_bars(tmp_path, symbol, "1m").equals(to_public(frame))


class _CountingPool(ThreadPoolExecutor):
    """A pool that records the most writes ever queued or running at once, each write slowed."""

    def __init__(self) -> None:
        super().__init__(2)
        self.queued = self.most = 0
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        def slow() -> None:
            time.sleep(0.005)  # an encoder slower than its producer
            fn(*args, **kwargs)
            with self._lock:
                self.queued -= 1

        with self._lock:
            self.queued += 1
            self.most = max(self.most, self.queued)
        return super().submit(slow)


def test_a_streamed_file_holds_a_bounded_number_of_row_groups_waiting(tmp_path: Path, monkeypatch) -> None:
    """A producer faster than the encoder waits: an import's memory does not grow with its size."""
    import klinestore.storage.writer

    monkeypatch.setattr(klinestore.storage.writer, "ROW_GROUP_ROWS", 100)
    monkeypatch.setattr(klinestore.storage.writer, "MIN_ROW_GROUP_ROWS", 100)
    monkeypatch.setattr(klinestore.storage.writer, "WRITES_AHEAD", 2)
    publish = Publish(tmp_path, IMPORT_WRITER, Stamper(IMPORT_WRITER))
    frames = [day_of(f"S{i:02d}USDT") for i in range(4)]  # 4 x 1440 rows: 57 row groups of one file
    with _CountingPool() as pool:
        files = PartitionFiles(publish, dataset_root(tmp_path), pool)
        for frame in frames:
            files.add(frame)
        assert files.close() == 4 * 1440
    publish.commit()
    assert pool.most <= 3  # two queued and the one being submitted
    (path,) = dataset_root(tmp_path).glob("interval=1m/month=*/*.parquet")
    assert pq.ParquetFile(path).metadata.num_rows == 4 * 1440
    assert read_bars(tmp_path, "S03USDT", "1m").equals(to_public(frames[3]))


def test_partition_files_refuse_a_symbol_out_of_order(tmp_path: Path) -> None:
    publish = Publish(tmp_path, IMPORT_WRITER, Stamper(IMPORT_WRITER))
    with ThreadPoolExecutor(1) as pool:
        files = PartitionFiles(publish, dataset_root(tmp_path), pool)
        files.add(day_of("BBBUSDT"))
        with pytest.raises(DatasetError, match="AAAUSDT arrived after BBBUSDT"):
            files.add(day_of("AAAUSDT"))
        files.discard()
    publish.abort()
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob("*.tmp"))


def test_unique_sorted_keeps_the_largest_version_of_a_key() -> None:
    older, newer = bar("BTCUSDT", 3, 100.0), bar("BTCUSDT", 3, 200.0)
    frame = from_bars([bar("ETHUSDT", 1), newer, bar("BTCUSDT", 1), older], [5, 9, 5, 5])
    out = unique_sorted(frame)
    assert out.select("symbol", "open_time").rows() == [("BTCUSDT", T0 + MINUTE), ("BTCUSDT", T0 + 3 * MINUTE),
                                                        ("ETHUSDT", T0 + MINUTE)]
    assert out["open"].to_list()[1] == 200.0


@pytest.mark.parametrize(("interval", "rows"), [("1m", 65_536), ("5m", 16_384), ("15m", 4_096), ("1h", 65_536),
                                                ("4h", 65_536), ("1d", 65_536), ("1M", 65_536)])
def test_row_groups_hold_about_a_symbol_partition(interval: str, rows: int) -> None:
    """A symbol's month (under 1h) in one or two groups; a year file (1h and longer) in the largest groups."""
    assert row_group_rows(interval) == rows


def test_with_version_ranks_each_row_by_its_source_one_source_or_several() -> None:
    """A one-source frame takes a shortcut (one repeated value); it must rank as the row-wise rule does."""
    frames = [from_bars([bar(minute=i, source=source) for i in range(3)]) for source in ("import", "resample")]
    frames.append(pl.concat(frames))  # two sources: ranked row by row
    for frame in frames:
        expected = frame.with_columns(version_expr(41)).get_column("version")
        assert with_version(frame, 41).get_column("version").to_list() == expected.to_list()
    assert with_version(frames[0].clear(), 41).get_column("version").len() == 0


def test_to_arrow_gives_the_file_schema_from_working_and_public_frames() -> None:
    working = with_version(from_bars([bar(minute=i) for i in range(4)]), 7)
    table = to_arrow(working)
    assert table.schema == FILE_SCHEMA
    assert table.equals(to_arrow(working.with_columns(pl.col("open_time", "close_time").cast(TIME))))
    assert table.column("open_time").to_pylist()[0].timestamp() * 1000 == T0
