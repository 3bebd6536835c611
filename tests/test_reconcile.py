"""Reconciliation decisions without sockets: REST's latest closed bar, resampled buckets, trade coverage."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from klinestore.config import ToleranceConfig
from klinestore.core.schema import Bar
from klinestore.ingest.protocol.rest import RestKline, klines_weight
from klinestore.ingest.trades import TRADE_DTYPE
from klinestore.jobs.reconcile import closed_rows, resample_check, rest_limit, trade_check, trade_runs
from klinestore.storage.frames import from_bars, to_bars
from klinestore.storage.resample import resample
from klinestore.storage.trades import bars_from_trades

M = 60_000
T0 = 1_714_521_600_000
TOL = ToleranceConfig()


def minute(i: int, close: float, volume: float = 2.0, symbol: str = "BTCUSDT") -> Bar:
    t = T0 + i * M
    return Bar(symbol, "1m", t, t + M - 1, close - 1, close + 2, close - 3, close, volume, volume * close, 5,
               volume / 2, volume * close / 2, "ws", True)


def ws_bars(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.lit("ws").alias("source"))


def test_the_latest_closed_row_is_the_newest_row_closed_by_now() -> None:
    rows = [RestKline(T0, 1, 1, 1, 1, 1, T0 + M - 1, 1, 1, 1, 1), RestKline(T0 + M, 1, 1, 1, 1, 1, T0 + 2 * M - 1, 1, 1, 1, 1)]
    assert closed_rows(rows, T0 + M + 5)[-1].open_time == T0  # the seed's second-to-last
    assert closed_rows(rows, T0 + 10) == []


def test_the_newest_row_is_never_taken_as_closed() -> None:
    """A request sent in a bar's last milliseconds gets that bar partial; the clock read after the
    answer is already past its close, but the answer has no later row to prove it closed."""
    rows = [RestKline(T0, 1, 1, 1, 1, 1, T0 + M - 1, 1, 1, 1, 1), RestKline(T0 + M, 1, 1, 1, 1, 1, T0 + 2 * M - 1, 1, 1, 1, 1)]
    assert closed_rows(rows, T0 + 2 * M + 5)[-1].open_time == T0
    assert closed_rows(rows[1:], T0 + 2 * M + 5) == []


def test_each_run_checks_every_closed_bar_back_to_the_last_run_at_weight_one() -> None:
    """A correction the exchange makes to a bar after a run compared it, or a WebSocket close
    that came after its grace, is caught by the next run: it asks back to what was checked."""
    rows = [RestKline(T0 + i * M, 1, 1, 1, 1, 1, T0 + (i + 1) * M - 1, 1, 1, 1, 1) for i in range(5)]
    assert [r.open_time for r in closed_rows(rows, T0 + 4 * M + 5)] == [T0 + i * M for i in range(4)]
    assert rest_limit(None, T0, "1m") == 2  # the first run: the seed's latest closed bar
    assert rest_limit(T0, T0 + 5 * M + 5, "1m") == 7  # bars T0..T0+4 closed since, the open one, one more
    assert rest_limit(T0, T0 + 10_000 * M, "1m") == 99 and klines_weight(99) == 1
    assert rest_limit(T0, T0 + 5 * M, "1h") == 2
    assert rest_limit(1_704_067_200_000, 1_711_929_600_000 + 5, "1M") == 5  # 2024-01 checked; Feb and Mar closed since, Apr open

def test_resampled_buckets_against_the_exchanges_bars() -> None:
    minutes = from_bars([minute(i, 100 + i) for i in range(15)])
    exchange = ws_bars(resample(minutes, "5m"))
    result = resample_check(exchange, minutes, "5m", after_ms=T0 - 1, minutes_last_open=T0 + 14 * M, tolerance=TOL)
    assert (result.checked, result.skipped, result.findings, result.cursor) == (3, 0, [], T0 + 10 * M)

    changed = exchange.with_columns(pl.when(pl.col("open_time") == T0 + 5 * M).then(pl.col("close") * 1.001)
                                    .otherwise(pl.col("close")).alias("close"))
    result = resample_check(changed, minutes, "5m", after_ms=T0 - 1, minutes_last_open=T0 + 14 * M, tolerance=TOL)
    (finding,) = result.findings
    assert finding.bar.open_time == T0 + 5 * M and finding.ref_source == "resample"
    assert [m.field for m in finding.mismatches] == ["close"]
    (row,) = finding.rows(123, "recorded")
    assert row == (123, "BTCUSDT", "5m", T0 + 5 * M, "close", pytest.approx(109 * 1.001), 109.0, "resample", "recorded")

    # a missing minute: the bucket is skipped once the 1m series is past it, and waits while it is not
    holed = minutes.filter(pl.col("open_time") != T0 + 7 * M)
    result = resample_check(exchange, holed, "5m", after_ms=T0 - 1, minutes_last_open=T0 + 14 * M, tolerance=TOL)
    assert (result.checked, result.skipped) == (2, 1)
    early = resample_check(exchange, holed, "5m", after_ms=T0 - 1, minutes_last_open=T0 + 8 * M, tolerance=TOL)
    assert (early.checked, early.skipped, early.cursor) == (1, 0, T0)
    # bars resampled by klinestore itself (a warm restart) are not the exchange's: not compared
    ours = resample_check(resample(minutes, "5m"), minutes, "5m", after_ms=T0 - 1, minutes_last_open=T0 + 14 * M,
                          tolerance=TOL)
    assert (ours.checked, ours.cursor) == (0, T0 - 1)


def trades_for(per_minute: list[int], start_id: int = 1000) -> np.ndarray:
    """Trades with consecutive ids: ``per_minute[i]`` of them in minute i, prices wandering."""
    rows = []
    agg = start_id
    for i, n in enumerate(per_minute):
        for k in range(n):
            price = 100 + i + (k % 3) * 0.5
            rows.append((agg, T0 + i * M + 1000 + k * 100, price, 0.25 + k / 100, agg * 3, agg * 3 + 2, bool(k % 2)))
            agg += 1
    return np.array(rows, dtype=TRADE_DTYPE)


def frame(trades: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"agg_trade_id": trades["id"], "price": trades["price"], "quantity": trades["qty"],
                         "first_trade_id": trades["first_id"], "last_trade_id": trades["last_id"],
                         "transact_time": trades["time"], "is_buyer_maker": trades["buyer_maker"]})


def test_minutes_are_compared_only_where_the_trades_cover_them() -> None:
    trades = trades_for([3, 4, 0, 5, 2, 3])  # minute 2 is empty: a bar at the previous close
    minutes = ws_bars(bars_from_trades(frame(trades), "BTCUSDT"))
    assert minutes.height == 6 and minutes.filter(pl.col("open_time") == T0 + 2 * M)["volume"].item() == 0
    result = trade_check(trades, minutes, "BTCUSDT", after_ms=T0 - 1, tolerance=TOL)
    # minute 0: no trade before it (maybe evicted); minutes 1-4 covered; minute 5: no trade after it yet
    assert (result.checked, result.skipped, result.findings, result.cursor) == (4, 1, [], T0 + 4 * M)

    wrong = minutes.with_columns(pl.when(pl.col("open_time") == T0 + 3 * M).then(pl.col("volume") * 1.05)
                                 .otherwise(pl.col("volume")).alias("volume"))
    (finding,) = trade_check(trades, wrong, "BTCUSDT", after_ms=T0 - 1, tolerance=TOL).findings
    assert finding.bar.open_time == T0 + 3 * M and [m.field for m in finding.mismatches] == ["volume"]
    assert finding.ref_source == "aggtrades"

    # a trade lost in minute 3 (a reconnect): minute 3 cannot be checked, its neighbours still can
    lost = np.concatenate([trades[:9], trades[10:]])
    result = trade_check(lost, minutes, "BTCUSDT", after_ms=T0 - 1, tolerance=TOL)
    assert (result.checked, result.skipped, result.findings) == (3, 2, [])
    # already decided bars are not looked at again
    assert trade_check(trades, minutes, "BTCUSDT", after_ms=T0 + 4 * M, tolerance=TOL).cursor == T0 + 4 * M


def test_trade_runs_break_on_an_id_gap_or_time_going_back() -> None:
    ids = np.array([1, 2, 3, 5, 6, 7])
    times = np.array([1, 2, 3, 4, 3, 5])
    assert trade_runs(ids, times).tolist() == [0, 0, 0, 1, 2, 2]
    assert trade_runs(np.array([], dtype=np.int64), np.array([], dtype=np.int64)).tolist() == []
    assert to_bars(from_bars([minute(0, 1.0)]))[0] == minute(0, 1.0)
