"""BarStore: round trips, the dedup rule, WAL replay, warm restart, gaps, and the SQL relation."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klinestore.config import StorageConfig
from klinestore.storage import Bar, BarError, StorageError
from klinestore.storage.frames import to_bars
from klinestore.storage.reader import (
    bars_relation_sql,
    find_gaps,
    find_gaps_many,
    last_stored_open_time,
    load_recent,
    read_bars,
)
from klinestore.storage.store import BarStore
from storage_support import MINUTE, T0, assert_one_row_per_key, bar, sql_rows

CONFIG = StorageConfig(wal_fsync_window=0.05, compaction_grace=0.0, compaction_min_files=3)

bars_strategy = st.lists(
    st.builds(
        bar,
        symbol=st.sampled_from(["BTCUSDT", "ETHUSDT", "1000PEPEUSDT"]),
        minute=st.integers(0, 3 * 1440),
        price=st.floats(0.0001, 1e6, allow_nan=False, allow_infinity=False),
        source=st.sampled_from(["ws", "rest", "import"]),
        volume=st.sampled_from([0.0, 0.001, 1.5, 1234.56789]),
    ),
    max_size=60,
)


def stored_1m(data_dir: Path, symbol: str) -> list[Bar]:
    return to_bars(read_bars(data_dir, symbol, "1m"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(bars_strategy, min_size=1, max_size=4))
def test_any_bars_appended_and_flushed_read_back_equal_last_write_winning(tmp_path_factory, batches) -> None:
    data_dir = tmp_path_factory.mktemp("store")
    expected: dict[tuple[str, str, int], Bar] = {}
    with BarStore(data_dir, CONFIG) as store:
        for batch in batches:
            store.append(batch)
            expected.update((b.key, b) for b in batch)
            store.flush()
    for symbol in ("BTCUSDT", "ETHUSDT", "1000PEPEUSDT"):
        want = sorted((b for b in expected.values() if b.symbol == symbol), key=lambda b: b.open_time)
        assert stored_1m(data_dir, symbol) == want
    assert_one_row_per_key(sql_rows(data_dir))


def test_exchange_bars_win_over_resampled_ones_whatever_the_order(tmp_path: Path) -> None:
    exchange_5m = bar(minute=0, interval="5m", price=500.0)
    with BarStore(tmp_path, CONFIG) as store:
        store.append([exchange_5m])
        store.flush()
        store.append([bar(minute=i) for i in range(6)])  # resampling these writes a 5m bar later
        store.flush()
        store.append([bar(minute=0, interval="5m", price=7.0, source="resample")])
        store.flush()
    five = read_bars(tmp_path, "BTCUSDT", "5m")
    assert five.height == 1 and five.item(0, "source") == "ws" and five.item(0, "open") == 500.0
    assert five["open"].to_list() == [500.0]


def test_flush_resamples_the_buckets_its_minutes_complete(tmp_path: Path) -> None:
    with BarStore(tmp_path, CONFIG) as store:
        for i in range(61):
            store.append([bar(minute=i, price=100 + i)])
            if i % 7 == 0:
                store.flush()
    five = read_bars(tmp_path, "BTCUSDT", "5m")
    assert five.height == 12 and five["is_complete"].all() and (five["source"] == "resample").all()
    hour = read_bars(tmp_path, "BTCUSDT", "1h").row(0, named=True)
    assert (hour["open"], hour["close"], hour["high"], hour["volume"]) == (100, 159.5, 160, 1.5 * 60)


def test_wal_replay_after_a_crash_and_replaying_twice_change_nothing(tmp_path: Path) -> None:
    store = BarStore(tmp_path, CONFIG)
    store.open()
    store.append([bar(minute=i) for i in range(10)])
    store._wal.close()  # the process dies: no flush, the lock goes with it
    store._lock.release()
    for _ in range(2):  # open twice without flushing: the second replay sees the same records
        again = BarStore(tmp_path, CONFIG)
        state = again.open()
        assert state.replayed_bars == 10 and state.last_open_times[("BTCUSDT", "1m")] == T0 + 9 * MINUTE
        again._wal.close()
        again._lock.release()
    with BarStore(tmp_path, CONFIG) as final:
        final.flush()
    assert stored_1m(tmp_path, "BTCUSDT") == [bar(minute=i) for i in range(10)]


def test_restart_state_reports_the_gap_in_exchange_time(tmp_path: Path) -> None:
    with BarStore(tmp_path, CONFIG) as store:
        store.append([bar(minute=i) for i in range(5)])
    store = BarStore(tmp_path, CONFIG)
    state = store.open()
    now = T0 + 9 * MINUTE + 30_000  # first live event: 00:09:30, the 00:09 bar is still open
    assert state.gap("BTCUSDT", "1m", now) == (T0 + 5 * MINUTE, T0 + 8 * MINUTE)
    assert state.gap("BTCUSDT", "1m", T0 + 5 * MINUTE + 1) is None
    assert state.gap("SOLUSDT", "1m", now) is None
    store.close()
    assert last_stored_open_time(tmp_path, "BTCUSDT", "1m") == T0 + 4 * MINUTE


def test_one_shard_per_process_and_bad_bars_are_refused(tmp_path: Path) -> None:
    with BarStore(tmp_path, CONFIG) as store:
        with pytest.raises(StorageError, match="open in another process"):
            BarStore(tmp_path, CONFIG).open()
        BarStore(tmp_path, CONFIG, shard_id=1).open()
        for bad in (Bar("BTC/USDT", "1m", T0, T0 + 1, 1, 1, 1, 1, 0, 0, 0, 0, 0),
                    Bar("BTCUSDT", "2m", T0, T0 + 1, 1, 1, 1, 1, 0, 0, 0, 0, 0),
                    Bar("BTCUSDT", "1m", T0 + 5, T0 + 6, 1, 1, 1, 1, 0, 0, 0, 0, 0),
                    Bar("BTCUSDT", "1m", T0, T0 + 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, source="guess"),
                    Bar("BTCUSDT", "1m", T0, T0 + 1, 1, 1, 1, 1, 0, 0, 2**63, 0, 0)):  # no int64: every flush failed
            with pytest.raises(BarError):
                store.append([bad])
        assert store.pending_bars == 0


def test_load_recent_reads_parquet_plus_wal(tmp_path: Path) -> None:
    store = BarStore(tmp_path, CONFIG)
    store.open()
    store.append([bar(s, i) for i in range(300) for s in ("BTCUSDT", "ETHUSDT")])
    store.flush()
    store.append([bar(s, i) for i in range(300, 320) for s in ("BTCUSDT", "ETHUSDT")])  # WAL only
    recent = load_recent(tmp_path, ["BTCUSDT", "ETHUSDT", "SOLUSDT"], {"1m": 100, "5m": 1000})
    btc = recent[("BTCUSDT", "1m")]
    assert btc.height == 100 and btc["open_time"].dt.epoch("ms").to_list() == [T0 + i * MINUTE for i in range(220, 320)]
    assert recent[("SOLUSDT", "1m")].is_empty() and recent[("ETHUSDT", "5m")].height == 60
    store.close()


def test_find_gaps_returns_missing_open_time_ranges(tmp_path: Path) -> None:
    with BarStore(tmp_path, CONFIG) as store:
        store.append([bar(minute=i) for i in (0, 1, 2, 6, 7, 9)])
    gaps = find_gaps(tmp_path, "BTCUSDT", "1m", T0 - MINUTE, T0 + 12 * MINUTE)
    assert gaps == [(T0 - MINUTE, T0 - MINUTE), (T0 + 3 * MINUTE, T0 + 5 * MINUTE), (T0 + 8 * MINUTE, T0 + 8 * MINUTE),
                    (T0 + 10 * MINUTE, T0 + 11 * MINUTE)]
    assert find_gaps(tmp_path, "BTCUSDT", "1m", T0, T0 + 3 * MINUTE) == []


def test_find_gaps_of_many_symbols_in_one_scan_and_incomplete_buckets(tmp_path: Path) -> None:
    with BarStore(tmp_path, CONFIG) as store:
        store.append([bar(minute=i) for i in range(10) if i != 3] + [bar("ETHUSDT", minute=i) for i in range(10)])
    many = find_gaps_many(tmp_path, "1m", {"BTCUSDT": (T0, T0 + 10 * MINUTE), "ETHUSDT": (T0, T0 + 12 * MINUTE),
                                           "SOLUSDT": (T0, T0 + MINUTE)})
    assert many == {"BTCUSDT": [(T0 + 3 * MINUTE, T0 + 3 * MINUTE)],
                    "ETHUSDT": [(T0 + 10 * MINUTE, T0 + 11 * MINUTE)], "SOLUSDT": [(T0, T0)]}
    # the BTCUSDT 5m bucket at T0 is resampled from incomplete minutes: there, but not the exchange's bar
    assert find_gaps(tmp_path, "BTCUSDT", "5m", T0, T0 + 10 * MINUTE) == []
    assert find_gaps_many(tmp_path, "5m", {"BTCUSDT": (T0, T0 + 10 * MINUTE), "ETHUSDT": (T0, T0 + 10 * MINUTE)},
                          complete_only=True) == {"BTCUSDT": [(T0, T0)], "ETHUSDT": []}


def test_append_and_flush_from_two_threads_lose_nothing(tmp_path: Path) -> None:
    with BarStore(tmp_path, CONFIG) as store:
        stop = threading.Event()

        def flusher() -> None:
            while not stop.is_set():
                store.flush()

        thread = threading.Thread(target=flusher)
        thread.start()
        for i in range(600):
            store.append([bar(minute=i), bar("ETHUSDT", minute=i)])
        stop.set()
        thread.join()
    assert len(stored_1m(tmp_path, "BTCUSDT")) == len(stored_1m(tmp_path, "ETHUSDT")) == 600


def test_sql_relation_has_the_bar_columns_and_is_empty_on_an_empty_dataset(tmp_path: Path) -> None:
    empty = sql_rows(tmp_path)
    assert empty.is_empty() and empty.columns == [
        "symbol", "interval", "open_time", "close_time", "open", "high", "low", "close", "volume", "quote_volume",
        "trades", "taker_buy_volume", "taker_buy_quote_volume", "is_complete", "source"]
    with BarStore(tmp_path, CONFIG) as store:
        store.append([bar(minute=i) for i in range(10)])
    rows = sql_rows(tmp_path)
    assert rows.schema["open_time"].time_zone in ("UTC", "Etc/UTC") and rows.height == 10 + 2


def test_one_symbol_of_a_coarse_interval_reads_only_its_row_groups(tmp_path: Path) -> None:
    """Row groups of a month file are sized per interval (about a symbol-month), so a one-symbol
    query over the coarsest monthly interval (15m) skips the other symbols' groups by their statistics."""
    quarters = [bar(f"S{i:02d}USDT", q, 100.0 + i, interval="15m") for i in range(60) for q in range(744)]
    with BarStore(tmp_path, CONFIG) as store:
        store.append(quarters)
    files = list((tmp_path / "bars" / "interval=15m").glob("month=*/*.parquet"))
    groups = sum(pq.ParquetFile(f).metadata.num_row_groups for f in files)
    assert groups >= 10  # 44 640 rows: 4 096-row groups, not one 65 536-row group
    query = f"SELECT * FROM ({bars_relation_sql(tmp_path, '15m')}) WHERE symbol = 'S07USDT'"
    with duckdb.connect() as con:
        assert con.sql(query).pl().height == 744
        plan = con.sql(f"EXPLAIN ANALYZE {query}").fetchall()[0][1]
    scanned = re.search(r"Row Groups Scanned: (\d+) / (\d+)", plan)
    assert scanned is not None and int(scanned[1]) <= 2 and int(scanned[2]) == groups


def test_key_filters_are_pushed_below_the_dedup_into_the_scan(tmp_path: Path) -> None:
    with BarStore(tmp_path, CONFIG) as store:
        store.append([bar(minute=i) for i in range(10)])
    query = (f"EXPLAIN SELECT * FROM ({bars_relation_sql(tmp_path)}) WHERE symbol = 'BTCUSDT' "
             "AND open_time >= TIMESTAMPTZ '2024-01-01 00:05:00+00'")
    with duckdb.connect() as con:
        plan = con.sql(query).fetchall()[0][1]
    scan = plan[plan.index("READ_PARQUET"):]
    assert "symbol = 'BTCUSDT'" in scan and "open_time >=" in scan
