"""Kline series: in-place open bar, closed bars once, rejects by reason, gaps, readiness, memory."""

from __future__ import annotations

import tracemalloc
from collections import deque

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from frames import T0, event, kline
from klinestore.core.schema import Bar
from klinestore.ingest.klines import CLOSE_GRACE_MS, Gap, KlineSeries, frame_rows, kline_bar
from klinestore.ingest.ring import Ring

M = 60_000


def closed(t: int, symbol: str = "BTCUSDT", interval: str = "1m", **kw: float) -> Bar:
    return kline_bar(symbol, event(kline(symbol, interval, t, x=True, **kw)).k)


def series(capacity: int = 100, interval: str = "1m") -> tuple[KlineSeries, list[Gap]]:
    gaps: list[Gap] = []
    return KlineSeries("BTCUSDT", interval, capacity, on_gap=gaps.append), gaps


def close(s: KlineSeries, bar: Bar) -> str:
    verdict = s.check_close(bar)
    if verdict in ("append", "insert"):
        s.commit_close(bar, verdict)
    return verdict


def test_open_bar_is_updated_in_place_and_closed_bar_appended_once() -> None:
    s, gaps = series()
    for price in (100.0, 100.7, 100.2):
        assert s.update_open(event(kline(t=T0, c=price)).k, T0 + 500) is None
    assert s.open_bar is not None and s.open_bar.c == 100.2 and len(s.ring) == 0
    assert close(s, closed(T0)) == "append"
    assert s.open_bar is None and len(s.ring) == 1
    assert close(s, closed(T0)) == "duplicate"
    assert s.update_open(event(kline(t=T0)).k, T0 + 900) == "stale"
    assert len(s.ring) == 1 and s.rejected == {"duplicate": 1, "stale": 1} and gaps == []


def test_inconsistent_bars_are_rejected_by_reason() -> None:
    s, _ = series()
    assert s.update_open(event(kline(t=T0, o=100, h=99.5, l=99, c=99.2)).k, T0) == "high_below"
    assert s.update_open(event(kline(t=T0, o=100, h=101, l=100.5, c=100.7)).k, T0) == "low_above"
    assert s.update_open(event(kline(t=T0 + 1, x=False)).k, T0) == "misaligned"
    assert s.update_open(event(kline(interval="5m", t=T0)).k, T0) == "interval_mismatch"
    assert s.update_open(event(kline(t=T0, T=T0 + 30_000)).k, T0) == "close_time"  # only a final bar closes early
    good = closed(T0)
    assert s.check_close(Bar(**{**_fields(good), "volume": -1.0})) == "negative_volume"
    assert s.check_close(Bar(**{**_fields(good), "high": float("nan")})) == "nan"
    assert s.check_close(Bar(**{**_fields(good), "taker_buy_volume": good.volume * 2})) == "taker_exceeds_volume"
    assert s.check_close(Bar(**{**_fields(good), "close_time": T0 + M})) == "close_time"
    assert dict(s.rejected) == {
        "high_below": 1, "low_above": 1, "misaligned": 1, "interval_mismatch": 1, "close_time": 2,
        "negative_volume": 1, "nan": 1, "taker_exceeds_volume": 1,
    }
    assert len(s.ring) == 0


def test_an_irregular_outage_close_is_kept_and_counted() -> None:
    s, _ = series()
    assert close(s, closed(T0, T=T0 + 41_234)) == "append"
    assert s.irregular_closes == 1 and s.rejected == {}


def test_a_jump_between_closed_bars_is_one_gap() -> None:
    s, gaps = series()
    close(s, closed(T0))
    close(s, closed(T0 + 4 * M))
    assert gaps == [Gap("BTCUSDT", "1m", T0 + M, T0 + 3 * M, "gap")]
    assert gaps[0].bar_count() == 3
    assert s.contiguous_from == T0 + 4 * M and s.contiguous_count() == 1


def test_the_hole_between_history_from_disk_and_the_first_live_bar_is_a_start_gap() -> None:
    s, gaps = series()
    s.insert([closed(T0 + i * M) for i in range(10)])  # warm restart
    assert gaps == [] and s.contiguous_count() == 10
    s.update_open(event(kline(t=T0 + 13 * M)).k, T0 + 13 * M + CLOSE_GRACE_MS)
    assert gaps == [Gap("BTCUSDT", "1m", T0 + 10 * M, T0 + 12 * M, "start")]


def test_after_a_reconnect_the_gap_is_known_within_the_grace_not_an_interval_later() -> None:
    s, gaps = series(interval="1h")
    h = 3_600_000
    close(s, closed(T0, interval="1h"))
    close(s, closed(T0 + h, interval="1h"))
    s.mark_interrupted()
    now_bar = T0 + 4 * h
    assert s.update_open(event(kline(interval="1h", t=now_bar)).k, now_bar + 100) is None
    assert gaps == []  # the previous bar's close may still be in flight
    s.update_open(event(kline(interval="1h", t=now_bar)).k, now_bar + CLOSE_GRACE_MS)
    assert gaps == [Gap("BTCUSDT", "1h", T0 + 2 * h, T0 + 3 * h, "reconnect")]
    close(s, closed(now_bar, interval="1h"))
    assert len(gaps) == 1  # not reported twice


def test_a_reconnect_without_a_hole_reports_nothing() -> None:
    s, gaps = series()
    close(s, closed(T0))
    s.mark_interrupted()
    s.update_open(event(kline(t=T0 + M)).k, T0 + M + 30_000)
    close(s, closed(T0 + M))
    close(s, closed(T0 + 3 * M))
    assert gaps == [Gap("BTCUSDT", "1m", T0 + 2 * M, T0 + 2 * M, "gap")]


def test_back_fill_inserts_in_order_without_duplicates_and_heals_the_run() -> None:
    s, _ = series()
    for i in (0, 1, 5, 6):
        close(s, closed(T0 + i * M))
    assert s.contiguous_count() == 2
    added = s.insert([closed(T0 + i * M) for i in (1, 2, 3, 4)])
    assert [b.open_time for b in added] == [T0 + 2 * M, T0 + 3 * M, T0 + 4 * M]
    times = s.ring.tail()["open_time"]
    assert list(times) == [T0 + i * M for i in range(7)]
    assert s.contiguous_from == T0 and s.contiguous_count() == 7 and s.rejected["duplicate"] == 1


def test_a_late_closed_bar_fills_its_hole() -> None:
    s, _ = series()
    close(s, closed(T0))
    close(s, closed(T0 + 2 * M))
    assert close(s, closed(T0 + M)) == "insert"
    assert close(s, closed(T0 + M)) == "duplicate"
    assert s.contiguous_count() == 3


def test_ready_and_frames() -> None:
    s, _ = series()
    assert not s.ready(T0 + 10 * M)
    for i in range(3):
        close(s, closed(T0 + i * M))
    assert s.ready(T0 + 3 * M + CLOSE_GRACE_MS)  # the bar of T0+2m is the newest that must have closed
    assert not s.ready(T0 + 4 * M + CLOSE_GRACE_MS)  # T0+3m should have closed by now
    frame = s.frame()
    assert frame.columns[:4] == ["symbol", "interval", "open_time", "close_time"]
    assert frame["open_time"].dtype == pl.Datetime("ms", "UTC") and frame.height == 3
    assert frame["source"].to_list() == ["ws"] * 3 and frame["is_complete"].all()
    s.update_open(event(kline(t=T0 + 3 * M, c=100.9)).k, T0 + 3 * M + 10)
    live = s.frame(include_open=True)
    assert live.height == 4 and live["close"][-1] == 100.9 and live["is_complete"].to_list() == [True] * 3 + [False]


def test_the_ring_keeps_the_newest_bars_at_capacity() -> None:
    s, _ = series(capacity=50)
    for i in range(130):
        close(s, closed(T0 + i * M))
    times = s.ring.tail()["open_time"]
    assert len(times) == 50 and times[0] == T0 + 80 * M and times[-1] == T0 + 129 * M
    assert s.contiguous_count() == 50 and s.contiguous_from == T0 + 80 * M  # the run's start the ring still holds
    assert close(s, closed(T0 + 10 * M)) == "stale"


def test_bytes_per_bar_beat_the_seeds_deque_of_dicts() -> None:
    n = 4000
    bars = [closed(T0 + i * M) for i in range(n)]
    tracemalloc.start()
    s, _ = series(capacity=n)
    for bar in bars:
        s.check_close(bar)
        s.commit_close(bar, "append")
    ring_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    tracemalloc.start()
    seed: deque[dict[str, object]] = deque(maxlen=n)
    for b in bars:
        seed.append({"t": b.open_time, "T": b.close_time, "o": b.open, "h": b.high, "l": b.low, "c": b.close,
                     "v": b.volume, "q": b.quote_volume, "n": b.trades, "V": b.taker_buy_volume,
                     "Q": b.taker_buy_quote_volume})
    seed_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert ring_bytes / n <= 96
    assert seed_bytes / n > 4 * ring_bytes / n


@settings(max_examples=60, deadline=None)
@given(order=st.lists(st.integers(0, 59), min_size=1, max_size=150), capacity=st.integers(5, 40))
def test_any_arrival_order_keeps_unique_sorted_newest_bars(order: list[int], capacity: int) -> None:
    s, _ = series(capacity=capacity)
    accepted: set[int] = set()
    for i in order:
        verdict = close(s, closed(T0 + i * M))
        if verdict in ("append", "insert"):
            assert i not in accepted
            accepted.add(i)
    times = list(s.ring.tail()["open_time"])
    assert times == sorted(set(times))
    assert set(times) <= {T0 + i * M for i in accepted}
    assert times[-1] == T0 + max(order) * M
    assert len(times) == min(capacity, len(accepted)) or len(times) == capacity


def test_ring_merge_respects_capacity_and_replace() -> None:
    dtype = np.dtype([("k", "<i8"), ("v", "<f8")])
    ring = Ring(dtype, 4, key="k")
    for k in (1, 2, 5):
        ring.append((k, float(k)))
    taken = ring.merge(np.array([(3, 30.0), (5, 50.0)], dtype=dtype))
    assert list(taken) == [True, False] and list(ring.tail()["k"]) == [1, 2, 3, 5]
    ring.merge(np.array([(5, 55.0), (6, 6.0)], dtype=dtype), replace=True)
    assert list(ring.tail()["k"]) == [2, 3, 5, 6] and ring.tail()["v"][2] == 55.0


def _fields(bar: Bar) -> dict[str, object]:
    return {f: getattr(bar, f) for f in bar.__struct_fields__}


def test_history_from_disk_loads_as_a_frame_and_round_trips() -> None:
    s, _ = series()
    for i in range(3):
        close(s, closed(T0 + i * M))
    disk = s.frame()
    other, gaps = series()
    assert other.load_rows(frame_rows(disk)) == 3
    assert other.frame().equals(disk) and gaps == [] and other.contiguous_count() == 3
    bad = frame_rows(disk.with_columns(pl.col("high") * 0.5))
    fresh, _ = series()
    assert fresh.load_rows(bad) == 0 and fresh.rejected["invalid_history"] == 3
