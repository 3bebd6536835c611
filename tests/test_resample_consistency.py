"""Resampled bars always equal the aggregation of the stored 1m bars of their bucket.

Also when another writer (``klinestore import``, another shard) published some of those
minutes while the service was running: the service watches the other writers' publish
markers and recomputes the buckets they touched.
"""

from __future__ import annotations

import threading
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from klinestore.config import StorageConfig
from klinestore.storage.frames import latest
from klinestore.storage.importer import import_archives
from klinestore.storage.reader import read_versioned
from klinestore.storage.resample import bucket_ends, bucket_opens, resample_many
from klinestore.storage.store import BarStore
from storage_support import MINUTE, T0, bar, kline_line

INTERVALS = ("5m", "15m", "1h")
CONFIG = StorageConfig(resample_intervals=INTERVALS)


def write_import(path: Path, minutes: dict[int, float]) -> Path:
    """A kline CSV of ``minutes`` (minute -> price) named so the importer reads it as BTCUSDT 1m."""
    path.write_text("".join(kline_line(T0 + m * MINUTE, p, 2.5) + "\n" for m, p in sorted(minutes.items())))
    return path


def inconsistent_buckets(data_dir: Path, symbol: str = "BTCUSDT") -> list[tuple[str, int, str]]:
    """Every closed bucket whose stored resampled bar differs from the aggregation of its stored minutes,
    and every complete closed bucket without one."""
    minutes = latest(read_versioned(data_dir, "1m", symbols=[symbol])).drop("version").sort("open_time")
    if minutes.is_empty():
        return []
    now = int(minutes.get_column("open_time").max()) + MINUTE
    expected = resample_many(minutes, INTERVALS)
    wrong = []
    for interval in INTERVALS:
        want = expected[interval]
        ends = bucket_ends(bucket_opens(want.get_column("open_time").to_numpy(), interval), interval)
        want = want.filter(pl.Series(ends <= now))
        stored = latest(read_versioned(data_dir, interval, symbols=[symbol])).drop("version")
        stored = stored.filter(pl.col("source") == "resample")
        joined = want.join(stored, on="open_time", how="full", suffix="_stored", coalesce=True)
        for row in joined.iter_rows(named=True):
            if row["interval"] is None:
                continue  # a stored bucket still open: checked once it closes
            if row["source_stored"] is None and not row["is_complete"]:
                continue  # an incomplete bucket closed only by another writer's minutes: not written (known gap)
            got = {c: row[f"{c}_stored"] for c in want.columns if c not in ("open_time", "symbol", "interval")}
            if got != {c: row[c] for c in got}:
                wrong.append((interval, (row["open_time"] - T0) // MINUTE, "missing" if row["source_stored"] is None else "differs"))
    return wrong


def run_service(store: BarStore, minutes: list[int], prices: dict[int, float], flush_every: int) -> None:
    for i, minute in enumerate(minutes):
        store.append([bar(minute=minute, price=prices.get(minute, 100.0 + minute % 7))])
        if (i + 1) % flush_every == 0:
            store.flush()


def test_an_import_filling_a_missing_minute_completes_the_hour_the_service_finishes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with BarStore(data, CONFIG) as store:
        run_service(store, [m for m in range(50) if m != 20], {}, flush_every=10)
        store.flush()
        import_archives([write_import(tmp_path / "BTCUSDT-1m-2024-01-01.csv", {20: 100.0})], data, CONFIG)
        run_service(store, list(range(50, 61)), {}, flush_every=1)
    assert inconsistent_buckets(data) == []
    hour = latest(read_versioned(data, "1h", symbols=["BTCUSDT"]))
    assert hour.filter(pl.col("open_time") == T0).get_column("is_complete").to_list() == [True]


def test_an_import_correcting_a_minute_of_the_current_hour_is_in_the_hour_bar(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with BarStore(data, CONFIG) as store:
        run_service(store, list(range(30)), {}, flush_every=5)
        import_archives([write_import(tmp_path / "BTCUSDT-1m-2024-01-01.csv", {10: 250.0})], data, CONFIG)
        run_service(store, list(range(30, 61)), {}, flush_every=7)
    assert inconsistent_buckets(data) == []
    hour = latest(read_versioned(data, "1h", symbols=["BTCUSDT"])).filter(pl.col("open_time") == T0)
    assert hour.get_column("high").to_list() == [251.0]


def test_an_import_published_between_two_flushes_is_noticed_without_new_bars(tmp_path: Path) -> None:
    """A quiet flush after an import of closed buckets, then the service's next bars, leave them consistent."""
    data = tmp_path / "data"
    with BarStore(data, CONFIG) as store:
        run_service(store, list(range(61)), {}, flush_every=61)
        import_archives([write_import(tmp_path / "BTCUSDT-1m-2024-01-01.csv", {59: 90.0, 58: 300.0})], data, CONFIG)
        store.flush()  # nothing pending: only what the import may have made stale
        run_service(store, [61], {}, flush_every=1)
    assert inconsistent_buckets(data) == []


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    gaps=st.sets(st.integers(0, 79), max_size=10),
    imported=st.dictionaries(st.integers(0, 84), st.floats(50, 500).map(lambda p: round(p, 2)), min_size=1, max_size=25),
    flush_every=st.integers(2, 13),
    split=st.integers(0, 80),
)
def test_resampled_bars_equal_their_stored_minutes_with_a_concurrent_import(
    tmp_path_factory, gaps: set[int], imported: dict[int, float], flush_every: int, split: int
) -> None:
    """Property: whatever the service appends and an import writes meanwhile, after the
    service's next flush every closed bucket equals the aggregation of its stored minutes."""
    tmp = tmp_path_factory.mktemp("consistency")
    data = tmp / "data"
    archive = write_import(tmp / "BTCUSDT-1m-2024-01-01.csv", imported)
    service_minutes = [m for m in range(80) if m not in gaps]
    with BarStore(data, CONFIG) as store:
        run_service(store, service_minutes[:split], {}, flush_every)
        importer = threading.Thread(target=import_archives, args=([archive], data, CONFIG))
        importer.start()
        run_service(store, service_minutes[split:], {}, flush_every)
        importer.join(timeout=120)
        assert not importer.is_alive()
        store.flush()
    assert inconsistent_buckets(data) == []


def test_more_imports_than_a_marker_keeps_between_two_flushes_refresh_the_whole_tail(tmp_path: Path) -> None:
    """Two imports correct this shard's minutes, then KEEP imports of another symbol push them out of the marker."""
    from klinestore.storage.markers import KEEP

    data = tmp_path / "data"
    with BarStore(data, CONFIG) as store:
        run_service(store, list(range(3, 40)), {}, flush_every=37)  # the tail starts inside a bucket
        for minute in (0, 1):
            import_archives([write_import(tmp_path / "BTCUSDT-1m-2024-01-01.csv", {minute: 200.0})], data, CONFIG)
        for i in range(KEEP):
            import_archives([write_import(tmp_path / "ETHUSDT-1m-2024-01-01.csv", {i: 200.0})], data, CONFIG)
        run_service(store, list(range(40, 61)), {}, flush_every=21)
    assert inconsistent_buckets(data) == []


def test_a_bucket_the_service_recomputed_while_an_import_read_is_recomputed_again(tmp_path: Path) -> None:
    """Imports run a service flush from their progress callback: after they began, before they publish.

    The second flush recomputes the hour for the first import and publishes it with a newer
    version than the second import's, from minutes without the second import's correction;
    the flush after that must recompute the hour once more.
    """
    data = tmp_path / "data"
    with BarStore(data, CONFIG) as store:
        run_service(store, list(range(62)), {}, flush_every=62)

        def correct_minute_5(_: object) -> None:
            store.append([bar(minute=5, price=300.0, source="rest")])
            store.flush()

        (tmp_path / "first").mkdir()
        (tmp_path / "second").mkdir()
        first = write_import(tmp_path / "first" / "BTCUSDT-1m-2024-01-01.csv", {10: 250.0})
        import_archives([first], data, CONFIG, progress=correct_minute_5)
        second = write_import(tmp_path / "second" / "BTCUSDT-1m-2024-01-01.csv", {12: 50.0})
        import_archives([second], data, CONFIG, progress=lambda _: store.flush())
        store.flush()
    assert inconsistent_buckets(data) == []
    hour = latest(read_versioned(data, "1h", symbols=["BTCUSDT"])).filter(pl.col("open_time") == T0)
    assert hour.select("high", "low").row(0) == (301.0, 49.0)


step = st.one_of(
    st.tuples(st.just("service"), st.lists(st.integers(0, 89), min_size=1, max_size=20)),
    st.tuples(st.just("import"), st.dictionaries(st.integers(0, 89), st.integers(50, 500).map(float), min_size=1,
                                                 max_size=6), st.lists(st.integers(0, 89), max_size=4)),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=6))
# found in CI: the first flush read the imported minute 4 from disk but did not keep it in the tail,
# so the second flush's correction of minute 0 saw bucket 0 as open and left it stale
@example(steps=[("import", {4: 50.0}, []), ("service", [0]), ("service", [0])])
def test_resampled_bars_equal_their_stored_minutes_whatever_the_interleaving(tmp_path_factory, steps: list) -> None:
    """Property: service flushes (of new, late or corrected minutes) run between imports and
    inside them (after an import began reading, before it publishes); after the service's
    next flush every closed bucket equals the aggregation of its stored minutes."""
    tmp = tmp_path_factory.mktemp("interleaving")
    data = tmp / "data"
    with BarStore(data, CONFIG) as store:
        for n, (kind, *args) in enumerate(steps):
            if kind == "service":
                run_service(store, args[0], {m: 100.0 + n for m in args[0]}, flush_every=len(args[0]))
                continue
            prices, during = args
            folder = tmp / f"import{n}"
            folder.mkdir()
            csv = write_import(folder / "BTCUSDT-1m-2024-01-01.csv", prices)

            def inside(_: object, during: list[int] = during, n: int = n) -> None:
                run_service(store, during, {m: 200.0 + n for m in during}, flush_every=max(len(during), 1))
                store.flush()

            import_archives([csv], data, CONFIG, progress=inside)
        store.flush()
    assert inconsistent_buckets(data) == []
