"""WAL: framing, torn tails, corruption, group commit, replay idempotence, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from klinestore.storage.errors import WalError
from klinestore.storage.wal import Wal, segment_paths
from storage_support import MINUTE, T0, bar
from support import subprocess_env


def _fill(directory: Path, n: int, window: float = 0.05) -> Wal:
    wal = Wal(directory, fsync_window=window)
    wal.open()
    for i in range(n):
        wal.append(i + 1, [bar(minute=i), bar("ETHUSDT", minute=i)])
    return wal


def test_records_replay_in_order_and_replaying_twice_changes_nothing(tmp_path: Path) -> None:
    _fill(tmp_path, 50).close()
    first = Wal(tmp_path).open()
    second = Wal(tmp_path).open()
    assert first.records == second.records
    assert [stamp for stamp, _ in first.records] == list(range(1, 51))
    assert first.bars == 100 and first.torn_bytes == first.corrupt_records == 0


def test_torn_tail_is_cut_and_appends_continue(tmp_path: Path) -> None:
    _fill(tmp_path, 10).close()
    (segment,) = segment_paths(tmp_path)
    size = segment.stat().st_size
    with open(segment, "r+b") as handle:
        handle.truncate(size - 7)  # the last record lost its tail
    wal = Wal(tmp_path)
    replay = wal.open()
    assert len(replay.records) == 9 and replay.torn_bytes > 0
    wal.append(99, [bar(minute=99)])
    wal.close()
    again = Wal(tmp_path).open()
    assert [s for s, _ in again.records] == [*range(1, 10), 99] and again.torn_bytes == 0


def test_corrupt_record_is_moved_aside_and_counted(tmp_path: Path) -> None:
    _fill(tmp_path, 10).close()
    (segment,) = segment_paths(tmp_path)
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    replay = Wal(tmp_path).open()
    assert replay.corrupt_records == 1 and 0 < len(replay.records) < 10
    assert segment.with_suffix(".corrupt").exists()


def test_group_commit_fsyncs_once_per_window(tmp_path: Path) -> None:
    wal = _fill(tmp_path / "grouped", 200, window=0.2)
    time.sleep(0.5)
    assert 1 <= wal.fsyncs <= 3
    wal.close()
    eager = _fill(tmp_path / "eager", 20, window=0)
    assert eager.fsyncs >= 20
    eager.close()


def test_rotate_seals_segments_and_closed_wal_refuses(tmp_path: Path) -> None:
    wal = _fill(tmp_path, 3)
    sealed = wal.rotate()
    assert len(sealed) == 1 and len(segment_paths(tmp_path)) == 2
    wal.close()
    with pytest.raises(WalError):
        wal.append(1, [bar()])


def test_kill_9_right_after_append_loses_nothing(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from klinestore.storage.wal import Wal
        from storage_support import bar
        wal = Wal(Path({str(tmp_path)!r}), fsync_window=1.0)
        wal.open()
        for i in range(500):
            wal.append(i + 1, [bar(minute=i)])
        print("appended", flush=True)
        time.sleep(60)
    """)
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), subprocess_env()["PYTHONPATH"]]))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "appended"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len(Wal(tmp_path).open().records) == 500


def test_one_flipped_byte_sets_aside_one_record_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 14 case 7: a flipped byte used to set its record and the rest of the segment aside
    silently (29 of 68 bars); now only that record goes, with a warning naming the segment
    and the open times of the bars lost, and the records after it replay."""
    _fill(tmp_path, 10).close()
    (segment,) = segment_paths(tmp_path)
    data = bytearray(segment.read_bytes())
    record = len(data) // 10
    data[4 * record + record // 2] ^= 0xFF  # inside the 5th record's payload
    segment.write_bytes(bytes(data))
    replay = Wal(tmp_path).open()
    assert replay.corrupt_records == 1
    assert [stamp for stamp, _ in replay.records] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    ((name, span),) = replay.corrupt
    assert name == segment.name and span.end - span.start == record
    assert (span.low_ms, span.high_ms, span.intervals) == (T0 + 3 * MINUTE, T0 + 5 * MINUTE, ("1m",))
    assert segment.with_suffix(".corrupt").stat().st_size == record
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and segment.name in r.getMessage()]
    assert len(warnings) == 1 and "2024-01-01T00:03:00.000Z" in warnings[0].getMessage()
    again = Wal(tmp_path).open()  # the segment now holds the whole records only
    assert again.records == replay.records and again.corrupt_records == 0


def test_a_corrupt_length_field_is_skipped_by_the_next_records_crc(tmp_path: Path) -> None:
    _fill(tmp_path, 6).close()
    (segment,) = segment_paths(tmp_path)
    data = bytearray(segment.read_bytes())
    record = len(data) // 6
    data[2 * record + 2] ^= 0x7F  # the 3rd record's length: it now claims to run past the segment
    segment.write_bytes(bytes(data))
    replay = Wal(tmp_path).open()
    assert [stamp for stamp, _ in replay.records] == [1, 2, 4, 5, 6] and replay.torn_bytes == 0
