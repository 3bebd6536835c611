"""Heartbeat → DataQual (seed v6.4 §4): the feed's liveness and storage's gaps as scores.

Every ``heartbeat.check_interval`` the heartbeat job turns what the service knows into one
``SymbolHealth`` per symbol (``collect_health``) and scores it (``DataQualModel``):

* missing streams: ``Feed.missing_streams()`` (every ``heartbeat.check_interval`` the pool
  judges streams silent for ``heartbeat.timeout``: missing when data was due, quiet when the
  market had nothing to report; ``klinestore.ingest.liveness``); quiet ones are named, free;
* stale: how late the symbol's next 1m bar is on the exchange clock (``lateness_s``);
* gaps: missing 1m bars of open gap records inside the served history (the 1m ring's
  ``cache.kline_1m_history`` minutes up to now);
* mismatches and resyncs: events the reconciliation and depth jobs record in the model.

A score that changes (its causes, or by 0.01) is logged with its reasons; the alerts are
evaluated on the same scores. The DataQual job writes the scores as ``dataqual`` rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from klinestore.core.intervals import MINUTE_MS, bar_open
from klinestore.ingest.feed import Feed
from klinestore.jobs.alerts import AlertMonitor
from klinestore.jobs.dataqual import DataQualModel, Score, SymbolHealth
from klinestore.jobs.gaps import GapBook
from klinestore.storage.tables import QualityDB

log = logging.getLogger(__name__)


def lateness_s(last_open_ms: int, now_ms: int, started_ms: int) -> float | None:
    """How late (exchange seconds) the next 1m bar is, or None when it is not late yet.

    The bar after the newest closed one (``last_open_ms``, -1 for none) closes at
    ``last_open_ms + 2 min``; a service that has not received a bar since it started
    (``started_ms``) expects the first close at the end of the minute it started in.
    """
    expected = bar_open(started_ms, "1m") + MINUTE_MS
    if last_open_ms >= 0:
        expected = max(expected, last_open_ms + 2 * MINUTE_MS)
    late = now_ms - expected
    return late / 1000.0 if late > 0 else None


def collect_health(feed: Feed, gaps: GapBook, now_ms: int, started_ms: int) -> list[SymbolHealth]:
    """One ``SymbolHealth`` per ingested symbol, from the feed's state and the open gap records."""
    missing, quiet = feed.missing_streams(), feed.quiet_streams()
    window_ms = feed.config.websocket.cache.kline_1m_history * MINUTE_MS
    out = []
    for symbol in sorted(feed.symbols):
        series = feed.state.klines.get((symbol, "1m"))
        out.append(SymbolHealth(
            symbol=symbol,
            missing_streams=tuple(missing.get(symbol, ())),
            quiet_streams=tuple(quiet.get(symbol, ())),
            stale_s=lateness_s(series.last_open_time, now_ms, started_ms) if series is not None else None,
            gap_bars=gaps.missing_bars(symbol, "1m", now_ms - window_ms, now_ms),
        ))
    return out


class QualityMonitor:
    """Scores every symbol, logs changes with their reasons, raises alerts, writes ``dataqual`` rows."""

    def __init__(
        self,
        feed: Feed,
        model: DataQualModel,
        gaps: GapBook,
        alerts: AlertMonitor,
        db: QualityDB,
        *,
        started_ms: Callable[[], int | None],
    ) -> None:
        self.feed = feed
        self.model = model
        self.gaps = gaps
        self.alerts = alerts
        self.db = db
        self.started_ms = started_ms
        self.scores: dict[str, Score] = {}
        self.rows_written = 0
        self._reported: dict[str, Score] = {}

    def assess(self) -> list[Score]:
        """Score every symbol now (exchange time); log the ones that changed."""
        now = self.feed.clock.now_ms()
        if now is None:
            return []
        started = self.started_ms() or now
        scores = self.model.score_all(collect_health(self.feed, self.gaps, now, started), now)
        for gone in set(self.scores) - set(self.feed.symbols):
            self.model.forget(gone)
            self._reported.pop(gone, None)
        self.scores = {s.symbol: s for s in scores}
        for score in scores:
            before = self._reported.get(score.symbol)
            if self.model.changed(before, score):
                self._reported[score.symbol] = score
                if before is not None or score.reasons:
                    was = f"{before.score:.2f} -> " if before is not None else ""
                    log.info("DataQual %s %s%.2f: %s", score.symbol, was, score.score, score.reason_text)
        return scores

    async def heartbeat(self) -> None:
        """The heartbeat job: score, log changes, evaluate the alerts."""
        scores = self.assess()
        now = self.feed.clock.now_ms()
        if now is not None:
            self.alerts.evaluate(now, self.feed.warming_up(), scores)

    async def record(self) -> int:
        """The DataQual job: one ``dataqual`` row per symbol, scored now."""
        scores = self.assess()
        rows = [(s.ts_ms, s.symbol, s.score, s.missing_streams, s.mismatches, s.gaps, s.reason_text) for s in scores]
        if rows:
            await asyncio.to_thread(self.db.insert_dataqual, rows)
            self.rows_written += len(rows)
        return len(rows)

    def status(self) -> dict[str, dict[str, Any]]:
        """status.json's ``dataqual``: per symbol the latest score and why."""
        return {
            symbol: {"score": s.score, "reasons": s.reason_text, "missing_streams": s.missing_streams,
                     "mismatches": s.mismatches, "gaps": s.gaps,
                     "penalties": {k: round(v, 4) for k, v in s.penalties.items()}}
            for symbol, s in sorted(self.scores.items())
        }
