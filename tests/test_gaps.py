"""Gap records: the split rule, the in-memory book, and the records in DuckDB."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klinestore.jobs.gaps import GapBook, bars_in, split_gap
from klinestore.storage.tables import QualityDB

M = 60_000
T0 = 1_714_521_600_000


def test_split_gap_cuts_a_record_into_stored_and_missing_runs() -> None:
    start, end = T0, T0 + 9 * M
    assert split_gap(start, end, "1m", [(start, end)]) == [(start, end, True)]
    assert split_gap(start, end, "1m", []) == [(start, end, False)]
    assert split_gap(start, end, "1m", [(T0 + 2 * M, T0 + 3 * M), (T0 + 7 * M, T0 + 20 * M)]) == [
        (T0, T0 + M, False), (T0 + 2 * M, T0 + 3 * M, True), (T0 + 4 * M, T0 + 6 * M, False),
        (T0 + 7 * M, end, True),
    ]
    assert split_gap(T0, T0 + 15 * 60 * 1000, "5m", [(T0 - 300_000, T0)]) == [
        (T0, T0, True), (T0 + 300_000, T0 + 900_000, False)]


@given(st.sets(st.integers(0, 29)), st.integers(0, 29), st.integers(0, 29))
def test_split_gap_covers_the_record_exactly(missing: set[int], a: int, b: int) -> None:
    start, end = T0 + min(a, b) * M, T0 + max(a, b) * M
    runs_in = []
    for i in sorted(missing):
        if runs_in and runs_in[-1][1] == T0 + (i - 1) * M:
            runs_in[-1] = (runs_in[-1][0], T0 + i * M)
        else:
            runs_in.append((T0 + i * M, T0 + i * M))
    runs = split_gap(start, end, "1m", runs_in)
    bars = [(t, still) for first, last, still in runs for t in range(first, last + M, M)]
    assert [t for t, _ in bars] == list(range(start, end + M, M))
    assert all(still == ((t - T0) // M in missing) for t, still in bars)
    assert all(x[2] != y[2] for x, y in zip(runs, runs[1:]))  # runs alternate


def test_gap_book_counts_missing_bars_in_a_window() -> None:
    book = GapBook()
    book.add("BTCUSDT", "1m", T0, T0 + 9 * M)  # 10 bars
    book.add("BTCUSDT", "1m", T0 + 5 * M, T0 + 12 * M)  # the same hole, seen later: extended
    book.add("BTCUSDT", "5m", T0, T0)
    assert book.count() == 2 and book.bars("1m") == 13
    assert book.missing_bars("BTCUSDT", "1m", T0, T0 + 100 * M) == 13
    assert book.missing_bars("BTCUSDT", "1m", T0 + 3 * M + 1, T0 + 5 * M) == 1  # opens in [low, high)
    assert book.missing_bars("ETHUSDT", "1m", T0, T0 + 100 * M) == 0
    book.remove("BTCUSDT", "1m", T0)
    assert book.missing_bars("BTCUSDT", "1m", T0, T0 + 100 * M) == 0
    assert bars_in(T0, T0 - M, "1m") == 0 and bars_in(T0, T0 + 3_600_000, "1h") == 2


def read_gaps(db: QualityDB) -> list[tuple[object, ...]]:
    return db.query("SELECT symbol, interval, epoch_ms(start_time), epoch_ms(end_time), epoch_ms(detected_at), "
                    "epoch_ms(filled_at), reason FROM gaps ORDER BY start_time")


def test_records_split_fill_and_extend(tmp_path: Path) -> None:
    with QualityDB(tmp_path) as db:
        assert db.open_gap("BTCUSDT", "1m", T0, T0 + 5 * M, T0 + 6 * M, "reconnect")
        assert not db.open_gap("BTCUSDT", "1m", T0 + 2 * M, T0 + 7 * M, T0 + 8 * M, "gap")  # inside: extends
        assert db.open_gaps() == [("BTCUSDT", "1m", T0, T0 + 7 * M, T0 + 6 * M, "reconnect")]
        assert not db.split_gap("BTCUSDT", "1m", T0, T0 + 5 * M, [(T0, T0 + 5 * M, 1)])  # no longer that record
        assert db.split_gap("BTCUSDT", "1m", T0, T0 + 7 * M,
                            [(T0, T0 + M, 99), (T0 + 2 * M, T0 + 3 * M, None), (T0 + 4 * M, T0 + 7 * M, 99)])
        assert read_gaps(db) == [
            ("BTCUSDT", "1m", T0, T0 + M, T0 + 6 * M, 99, "reconnect"),
            ("BTCUSDT", "1m", T0 + 2 * M, T0 + 3 * M, T0 + 6 * M, None, "reconnect"),
            ("BTCUSDT", "1m", T0 + 4 * M, T0 + 7 * M, T0 + 6 * M, 99, "reconnect"),
        ]
        assert not db.fill_gap("BTCUSDT", "1m", T0 + 2 * M, 100, end_ms=T0 + 2 * M)  # the record is longer
        assert db.fill_gap("BTCUSDT", "1m", T0 + 2 * M, 100, end_ms=T0 + 3 * M)
        assert db.open_gaps() == []
        with pytest.raises(Exception, match="first piece"):
            db.split_gap("BTCUSDT", "1m", T0, T0 + M, [(T0 + M, T0 + M, None)])


def test_bars_lost_in_a_corrupt_wal_record_become_a_gap_that_lowers_dataqual(tmp_path: Path) -> None:
    """Issue 14 case 7: a crashed shard's WAL with one flipped byte. The restart sets the record
    aside and reports where; the service records the bars lost as a gap (reason wal_corrupt),
    which DataQual counts until they are refilled."""
    import asyncio

    from klinestore.config import StorageConfig
    from klinestore.ingest.clock import ExchangeClock
    from klinestore.jobs.dataqual import DataQualModel, SymbolHealth
    from klinestore.jobs.gaps import GapKeeper
    from klinestore.storage import BarStore
    from klinestore.storage.layout import wal_dir
    from klinestore.storage.wal import Wal, segment_paths
    from storage_support import T0 as JAN
    from storage_support import bar

    wal = Wal(wal_dir(tmp_path, "s0000"), fsync_window=0)  # what a shard killed before its flush leaves
    wal.open()
    for minute in range(10):
        wal.append(minute + 1, [bar(minute=minute), bar("ETHUSDT", minute=minute)])
    wal.close()
    (segment,) = segment_paths(wal_dir(tmp_path, "s0000"))
    data = bytearray(segment.read_bytes())
    record = len(data) // 10
    data[6 * record + record // 2] ^= 0xFF  # minute 6 of both symbols
    segment.write_bytes(bytes(data))

    store = BarStore(tmp_path, StorageConfig(wal_fsync_window=0.0, resample_intervals=()))
    restart = store.open()
    assert restart.corrupt_records == 1 and restart.replayed_bars == 18
    (lost,) = restart.wal_corrupt
    assert (lost["interval"], lost["start_ms"], lost["end_ms"]) == ("1m", JAN + 5 * M, JAN + 7 * M + 1)
    store.flush()  # the service flushes the replayed bars first
    store.close()

    async def record() -> tuple[list, int]:
        with QualityDB(tmp_path / "q") as db:
            keeper = GapKeeper(db, tmp_path, ExchangeClock())
            opened = await keeper.record_lost(restart.wal_corrupt, ["BTCUSDT", "ETHUSDT"], JAN + 60 * M, "wal_corrupt")
            return read_gaps(db), len(opened), keeper.book.missing_bars("BTCUSDT", "1m", JAN, JAN + 60 * M)

    gaps, opened, missing = asyncio.run(record())
    assert opened == 2 and missing == 1
    assert sorted((g[0], g[1], g[2], g[3], g[5], g[6]) for g in gaps) == [
        (s, "1m", JAN + 6 * M, JAN + 6 * M, None, "wal_corrupt") for s in ("BTCUSDT", "ETHUSDT")]
    model = DataQualModel(half_life_s=60, stale_after_s=120)
    assert model.score(SymbolHealth(symbol="BTCUSDT", gap_bars=missing), JAN).score < 1.0
