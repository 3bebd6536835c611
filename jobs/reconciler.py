"""Kline reconciliation jobs: the I/O around ``klinestore.jobs.reconcile``.

* ``run_klines`` (every ``reconciliation.kline_interval``): fallback mode asks REST for the
  closed bars of every (symbol, interval) back to the newest one the previous run checked
  (``limit`` 2 at first, then enough rows to reach it, at most 99: weight 1, through the weight
  budget) and compares each: the seed's latest closed bar, and also a bar the exchange
  corrected after an earlier run saw it, or one whose WebSocket close came after its grace.
  On a mismatch it stores the REST bar: WAL first (``sink.append``, source
  ``rest``, so storage's last-write-wins keeps it), then the ring (``insert(replace=True)``),
  one ``reconciliations`` row per differing field with ``action`` "replaced". WebSocket-only
  mode never calls REST klines: it compares the exchange's WebSocket bars of 5m/15m/1h/4h
  with their buckets resampled from the 1m ring (``ref_source`` "resample").
* ``run_trades`` (WebSocket-only, every ``reconciliation.aggtrade_interval``): 1m bars against
  the aggTrade window (``ref_source`` "aggtrades").

WebSocket-only findings are recorded (``action`` "recorded"), never acted on: the WebSocket bar
is the exchange's own. Each bar that disagrees is one DataQual mismatch event. A replaced bar
is not sent to ``on_kline_close`` again (callbacks see each bar once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from klinestore.core.intervals import bar_open, interval_ms
from klinestore.core.schema import Bar
from klinestore.ingest.backfill import rest_bar
from klinestore.ingest.budget import Priority
from klinestore.ingest.config import ToleranceConfig
from klinestore.ingest.errors import IngestError
from klinestore.ingest.feed import Feed
from klinestore.ingest.klines import CLOSE_GRACE_MS, KlineSeries, rows_frame
from klinestore.ingest.protocol.rest import RestKline
from klinestore.ingest.sink import BarSink
from klinestore.ingest.throttle import LogThrottle
from klinestore.jobs.dataqual import DataQualModel
from klinestore.jobs.reconcile import (
    CheckResult,
    Finding,
    closed_rows,
    compare,
    resample_check,
    rest_limit,
    trade_check,
)
from klinestore.storage import to_bars
from klinestore.storage.tables import QualityDB

log = logging.getLogger(__name__)

#: REST reconciliation requests in flight at once (the client allows 4; the rest queue here).
REST_CONCURRENCY = 4
#: Intervals compared with their 1m buckets (fixed lengths the resampler builds exactly).
RESAMPLED = frozenset({"3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d"})


@dataclass(slots=True)
class Tally:
    checked: int = 0
    mismatched: int = 0
    skipped: int = 0
    replaced: int = 0
    failures: int = 0


class KlineReconciler:
    """Compares stored/WebSocket bars with a reference and records what differs."""

    def __init__(
        self,
        feed: Feed,
        sink: BarSink,
        db: QualityDB,
        model: DataQualModel,
        tolerance: ToleranceConfig,
        *,
        started_ms: Callable[[], int | None],
    ) -> None:
        self.feed = feed
        self.sink = sink
        self.db = db
        self.model = model
        self.tolerance = tolerance
        self.started_ms = started_ms
        self.rest_klines = feed.config.modes.rest_klines_allowed
        self.tally = {"rest": Tally(), "resample": Tally(), "aggtrades": Tally()}
        self._cursor: dict[tuple[str, str, str], int] = {}  # (kind, symbol, interval) -> decided through
        self._rest_checked: dict[tuple[str, str], int] = {}  # (symbol, interval) -> newest open time REST-checked
        self._log = LogThrottle(log)  # a source that disagrees every minute logs once per symbol per 10 s

    # --- jobs -------------------------------------------------------------------------------------

    async def run_klines(self) -> None:
        if self.rest_klines:
            await self._rest_all()
        else:
            await self._resampled_all()

    async def run_trades(self) -> None:
        now = self.feed.clock.now_ms()
        if now is None:
            return
        work = []
        for symbol in list(self.feed.symbols):
            series = self.feed.state.klines.get((symbol, "1m"))
            window = self.feed.state.trades.get(symbol)
            if series is None or window is None:
                continue
            after = self._after("aggtrades", symbol, "1m")
            fresh = _newer(series, after)
            if fresh:  # copies of the rings' rows; frames are built off the event loop
                work.append((symbol, series.ring.tail(fresh), window.recent(None), after))
        if not work:
            return

        def compute() -> list[tuple[str, CheckResult]]:
            return [(symbol, trade_check(trades, rows_frame(symbol, "1m", minutes), symbol, after_ms=after,
                                         tolerance=self.tolerance))
                    for symbol, minutes, trades, after in work]

        for symbol, result in await asyncio.to_thread(compute):
            self._cursor[("aggtrades", symbol, "1m")] = result.cursor
            await self._take("aggtrades", result, now)

    # --- fallback: REST -----------------------------------------------------------------------------

    async def _rest_all(self) -> None:
        gate = asyncio.Semaphore(REST_CONCURRENCY)
        pairs = [(s, iv) for s, intervals in list(self.feed.symbols.items()) for iv in intervals]

        async def one(symbol: str, interval: str) -> None:
            async with gate:
                await self._rest_one(symbol, interval)

        results = await asyncio.gather(*(one(s, iv) for s, iv in pairs), return_exceptions=True)
        failed = [(pair, r) for pair, r in zip(pairs, results) if isinstance(r, BaseException)]
        for (symbol, interval), exc in failed:
            if not isinstance(exc, IngestError):
                raise exc
            self.tally["rest"].failures += 1
            log.warning("REST reconciliation of %s %s failed: %s", symbol, interval, exc)

    async def _rest_one(self, symbol: str, interval: str) -> None:
        now = self.feed.clock.now_ms()
        if now is None:
            return
        limit = rest_limit(self._rest_checked.get((symbol, interval)), now, interval)
        rows = await self.feed.rest.klines(symbol, interval, limit=limit, priority=Priority.CHECK)
        now = self.feed.clock.now_ms() or now
        series = self.feed.state.klines.get((symbol, interval))
        refs = closed_rows(rows, now)
        if not refs or series is None:
            return
        checked_to = refs[-1].open_time
        tally = self.tally["rest"]
        for ref_row in refs:
            bar = await self._ws_bar(series, ref_row)
            if bar is None:  # not received (yet): the back-fill fills a gap from REST; compared again next run
                tally.skipped += 1
                checked_to = min(checked_to, ref_row.open_time - 1)
                continue
            tally.checked += 1
            finding = compare(bar, rest_bar(symbol, interval, ref_row), "rest", self.tolerance)
            if finding is None:
                continue
            try:
                self.sink.append([finding.ref])  # WAL first: storage keeps the later write
            except Exception as exc:  # noqa: BLE001 - recorded as not replaced; the job goes on
                log.error("%s: the REST bar could not be stored (%r); the WebSocket bar stays", finding, exc)
                action = "replace_failed"
            else:
                series.insert([finding.ref], replace=True)
                tally.replaced += 1
                action = "replaced"
            await self._record([finding], action, now, "rest")
        self._rest_checked[(symbol, interval)] = checked_to

    async def _ws_bar(self, series: KlineSeries, ref: RestKline) -> Bar | None:
        """The ring's bar at ``ref.open_time``, waiting out the close's grace (real seconds) if it just closed."""
        deadline = time.monotonic() + self.feed.clock.seconds_to_arrive(ref.close_time + 1, CLOSE_GRACE_MS / 1000)
        while True:
            if series.ring.contains(ref.open_time):
                newer = len(series.ring) - series.ring.index_of(ref.open_time)
                return to_bars(rows_frame(series.symbol, series.interval, series.ring.tail(newer)[:1]))[0]
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.01)

    # --- WebSocket-only: resampled 1m against the exchange's longer bars ----------------------------

    async def _resampled_all(self) -> None:
        now = self.feed.clock.now_ms()
        if now is None:
            return
        work = []
        for symbol, intervals in list(self.feed.symbols.items()):
            minutes = self.feed.state.klines.get((symbol, "1m"))
            if minutes is None:
                continue
            for interval in intervals:
                series = self.feed.state.klines.get((symbol, interval))
                if interval not in RESAMPLED or series is None:
                    continue
                after = self._after("resample", symbol, interval)
                fresh = _newer(series, after)
                if not fresh:
                    continue
                bars = series.ring.tail(fresh)  # copies; frames are built off the event loop
                mins = minutes.ring.tail(_newer(minutes, int(bars["open_time"][0]) - 1))
                work.append((symbol, interval, bars, mins, after, minutes.last_open_time))
        if not work:
            return

        def compute() -> list[tuple[str, str, CheckResult]]:
            return [(symbol, interval, resample_check(rows_frame(symbol, interval, bars), rows_frame(symbol, "1m", mins),
                                                      interval, after_ms=after, minutes_last_open=last,
                                                      tolerance=self.tolerance))
                    for symbol, interval, bars, mins, after, last in work]

        for symbol, interval, result in await asyncio.to_thread(compute):
            self._cursor[("resample", symbol, interval)] = result.cursor
            await self._take("resample", result, now)

    # --- shared -------------------------------------------------------------------------------------

    def _after(self, kind: str, symbol: str, interval: str) -> int:
        """Bars opening after this are still to be checked: at first, those of the bucket the service started in."""
        cursor = self._cursor.get((kind, symbol, interval))
        if cursor is None:
            started = self.started_ms() or 0
            cursor = bar_open(started, interval) - interval_ms(interval)
        return cursor

    async def _take(self, kind: str, result: CheckResult, now: int) -> None:
        tally = self.tally[kind]
        tally.checked += result.checked
        tally.skipped += result.skipped
        if result.findings:
            await self._record(result.findings, "recorded", now, kind)

    async def _record(self, findings: list[Finding], action: str, now: int, kind: str) -> None:
        self.tally[kind].mismatched += len(findings)
        rows = []
        for finding in findings:
            self.model.record_mismatch(finding.bar.symbol, now)
            self._log.warning(f"{kind}:{finding.bar.symbol}", "reconciliation mismatch: %s (%s)", finding, action)
            rows.extend(finding.rows(now, action))
        await asyncio.to_thread(self.db.insert_reconciliations, rows)

    def forget(self, symbol: str) -> None:
        for key in [k for k in self._cursor if k[1] == symbol]:
            del self._cursor[key]
        for rest_key in [k for k in self._rest_checked if k[0] == symbol]:
            del self._rest_checked[rest_key]

    def status(self) -> dict[str, dict[str, int]]:
        kinds = ("rest",) if self.rest_klines else ("resample", "aggtrades")
        return {k: asdict(self.tally[k]) for k in kinds}


def _newer(series: KlineSeries, after_ms: int) -> int:
    """Closed bars of ``series`` opening after ``after_ms``."""
    if series.last_open_time <= after_ms:
        return 0
    return len(series.ring) - series.ring.index_of(after_ms + 1)

