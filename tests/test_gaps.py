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
