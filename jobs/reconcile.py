"""Kline reconciliation decisions, pure: which bars to compare with what, and what differs.

Three references, one rule (``compare_bars``: close/high/low within 0.01 %, volume within 1 %):

* **REST** (fallback mode, seed v6.4 §5.1): the closed bars of ``/fapi/v1/klines``
  (``closed_rows``; the seed's latest closed bar, and back to the newest one the previous run
  checked: ``rest_limit``); on a mismatch the REST bar replaces the stored one.
* **Resampled 1m** (WebSocket-only, ``resample_check``): each closed WebSocket bar of a longer
  interval against the bar ``klinestore.storage.resample`` builds from the 1m bars of its bucket, exactly
  as the exchange aggregates them. Only complete buckets are compared; a bucket with a
  missing minute is skipped once the 1m series has moved past it (it can never complete).
* **aggTrades** (WebSocket-only, ``trade_check``): each closed 1m bar against the bar
  ``storage.bars_from_trades`` rebuilds from the trade window. The window keeps only the
  newest trades (``cache.aggtrade_max_size``), and its 60 s time bound can never hold a whole
  closed minute, so the check reads the count-bounded window directly and compares a minute
  only when the trades prove they cover it: a kept trade before the minute, one at or after
  its end, and consecutive aggregate ids between them (aggregate ids are consecutive per
  symbol, so no trade of the minute is missing: not evicted, not lost in a reconnect). A
  minute the window does not cover is skipped; one with no later trade yet waits.

Every result says how far it decided (``cursor``: every bar opening at or before it was
compared or skipped), so each bar is looked at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from klinestore.core.intervals import MINUTE_MS, next_open
from klinestore.core.schema import EXCHANGE_SOURCES, Bar
from klinestore.ingest.config import ToleranceConfig
from klinestore.ingest.protocol.rest import RestKline
from klinestore.jobs.compare import Mismatch, compare_bars
from klinestore.storage import bars_from_trades, resample, to_bars, to_ms
from klinestore.storage.tables import ReconciliationRow

#: The largest klines ``limit`` that costs weight 1 (Binance: 1 below 100 rows).
REST_LIMIT_MAX = 99


@dataclass(frozen=True, slots=True)
class Finding:
    """A bar that disagrees with its reference: one ``reconciliations`` row per differing field."""

    bar: Bar
    ref: Bar
    ref_source: str  # "rest", "resample" or "aggtrades"
    mismatches: tuple[Mismatch, ...]

    def rows(self, ts_ms: int, action: str) -> list[ReconciliationRow]:
        b = self.bar
        return [(ts_ms, b.symbol, b.interval, b.open_time, m.field, m.value, m.ref_value, self.ref_source, action)
                for m in self.mismatches]

    def __str__(self) -> str:
        return (f"{self.bar.symbol} {self.bar.interval} {self.bar.open_time} vs {self.ref_source}: "
                + ", ".join(map(str, self.mismatches)))


@dataclass(slots=True)
class CheckResult:
    """What one pass over one series decided."""

    cursor: int  # every bar opening at or before this was compared or skipped
    findings: list[Finding] = field(default_factory=list)
    checked: int = 0  # bars compared
    skipped: int = 0  # bars that can never be compared (incomplete bucket, trades not covering)


def compare(bar: Bar, ref: Bar, ref_source: str, tolerance: ToleranceConfig) -> Finding | None:
    mismatches = compare_bars(bar, ref, price_tolerance=tolerance.price, volume_tolerance=tolerance.volume)
    return Finding(bar, ref, ref_source, tuple(mismatches)) if mismatches else None


def closed_rows(rows: Sequence[RestKline], now_ms: int) -> list[RestKline]:
    """The rows of a klines answer closed by exchange time ``now_ms``, oldest first.

    The newest row of an answer is never taken: the exchange always returns the bar open when
    it answered, and a clock read after the answer can be past that bar's close time (a request
    sent in a bar's last milliseconds), which would take a partial bar for the closed one. A
    row with a later row after it is closed by the exchange's own word.
    """
    newest = max((r.open_time for r in rows), default=None)
    return sorted((r for r in rows if r.open_time != newest and r.close_time < now_ms), key=lambda r: r.open_time)


def rest_limit(last_checked_open: int | None, now_ms: int, interval: str) -> int:
    """How many rows to ask so an answer reaches back to the newest bar checked by the last run
    (plus the open bar and one more): capped at 99, the largest limit of weight 1."""
    if last_checked_open is None:
        return 2
    behind, t = 0, next_open(last_checked_open, interval)  # bars opened since, counted (1M has no fixed length)
    while t <= now_ms and behind < REST_LIMIT_MAX:
        behind, t = behind + 1, next_open(t, interval)
    return max(2, min(REST_LIMIT_MAX, behind + 2))


def _exchange_bars(frame: pl.DataFrame, after_ms: int) -> pl.DataFrame:
    """The exchange's own bars (not resampled ones loaded at a warm restart) opening after ``after_ms``."""
    return to_ms(frame).filter(
        (pl.col("open_time") > after_ms) & pl.col("source").is_in(sorted(EXCHANGE_SOURCES))
    ).sort("open_time")


def resample_check(
    bars: pl.DataFrame, minutes: pl.DataFrame, interval: str, *, after_ms: int, minutes_last_open: int,
    tolerance: ToleranceConfig,
) -> CheckResult:
    """WebSocket bars of ``interval`` (``bars``) against their buckets resampled from ``minutes``.

    ``minutes_last_open`` is the newest closed 1m bar: a bucket whose last minute is older
    and still incomplete is skipped, a younger one waits for its minutes.
    """
    result = CheckResult(cursor=after_ms)
    ws = _exchange_bars(bars, after_ms)
    if ws.is_empty():
        return result
    built = {b.open_time: b for b in to_bars(resample(to_ms(minutes), interval))} if minutes.height else {}
    for bar in to_bars(ws):
        ref = built.get(bar.open_time)
        if ref is not None and ref.is_complete:
            result.checked += 1
            finding = compare(bar, ref, "resample", tolerance)
            if finding is not None:
                result.findings.append(finding)
        elif minutes_last_open >= next_open(bar.open_time, interval) - MINUTE_MS:
            result.skipped += 1
        else:
            break
        result.cursor = bar.open_time
    return result


def trade_runs(ids: np.ndarray, times: np.ndarray) -> np.ndarray:
    """A run number per trade: consecutive aggregate ids in non-decreasing time share one."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    breaks = (np.diff(ids) != 1) | (np.diff(times) < 0)
    return np.concatenate(([0], np.cumsum(breaks)))


def trade_check(
    trades: np.ndarray, minutes: pl.DataFrame, symbol: str, *, after_ms: int, tolerance: ToleranceConfig
) -> CheckResult:
    """Closed 1m bars (``minutes``) against bars rebuilt from ``trades`` (``klinestore.ingest.trades.TRADE_DTYPE`` rows, by id)."""
    result = CheckResult(cursor=after_ms)
    ws = _exchange_bars(minutes, after_ms)
    if ws.is_empty():
        return result
    times = np.ascontiguousarray(trades["time"])
    runs = trade_runs(np.ascontiguousarray(trades["id"]), times)
    covered: list[tuple[Bar, int, int]] = []  # bar, index of the trade before it, index of the first after it
    for bar in to_bars(ws):
        after = int(np.searchsorted(times, bar.open_time + MINUTE_MS, side="left"))
        if after >= len(times):
            break  # no trade after the minute yet: decided later
        before = int(np.searchsorted(times, bar.open_time, side="left")) - 1
        if before >= 0 and runs[before] == runs[after]:
            covered.append((bar, before, after))
        else:
            result.skipped += 1
        result.cursor = bar.open_time
    if not covered:
        return result
    # from the trade before the first minute (an empty minute is a bar at the previous close) to the
    # first trade after the last (so the rebuilt grid reaches it even when it is empty)
    window = trades[covered[0][1]: max(a for _, _, a in covered) + 1]
    rebuilt = bars_from_trades(pl.DataFrame({
        "agg_trade_id": window["id"], "price": window["price"], "quantity": window["qty"],
        "first_trade_id": window["first_id"], "last_trade_id": window["last_id"], "transact_time": window["time"],
        "is_buyer_maker": window["buyer_maker"],
    }), symbol, source="ws")
    refs = {b.open_time: b for b in to_bars(rebuilt)}
    for bar, _, _ in covered:
        result.checked += 1
        finding = compare(bar, refs[bar.open_time], "aggtrades", tolerance)
        if finding is not None:
            result.findings.append(finding)
    return result
