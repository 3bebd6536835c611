"""Alert rules (seed v4.4's thresholds) and their start/clear bookkeeping."""

from __future__ import annotations

import logging

import pytest

from klinestore.config import AlertsConfig
from klinestore.ingest.eventlog import EventLog
from klinestore.jobs.alerts import (
    AlertBook,
    AlertMonitor,
    dataqual_conditions,
    reconnect_condition,
    warming_conditions,
    warming_deadline,
)
from klinestore.jobs.dataqual import DataQualModel, SymbolHealth

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_714_521_600_000  # 00:00


def test_more_than_the_limit_of_losses_in_the_window() -> None:
    losses = [T0 + i * MIN for i in range(6)]
    assert reconnect_condition(losses[:5], T0 + 10 * MIN, HOUR, 5) is None
    assert reconnect_condition(losses, T0 + 10 * MIN, HOUR, 5) == "6 connection losses in the last 1 h (more than 5)"
    assert reconnect_condition(losses, T0 + HOUR + 1 * MIN, HOUR, 5) is None  # the first two left the window


def test_warming_up_is_overdue_past_the_limit_and_past_its_first_possible_close() -> None:
    grace = 60_000
    assert warming_deadline(T0 + 7 * MIN, "1m", 90 * MIN, grace) == T0 + 97 * MIN
    assert warming_deadline(T0 + 7 * MIN, "4h", 90 * MIN, grace) == T0 + 4 * HOUR + grace  # cannot be ready before
    since = {("BTCUSDT", "1m"): T0, ("BTCUSDT", "4h"): T0 + 7 * MIN, ("ETHUSDT", "1h"): T0 + 50 * MIN}
    assert warming_conditions(since, T0 + 100 * MIN, 90 * MIN, grace) == {"BTCUSDT": "warming up: 1m for 100 min"}
    later = warming_conditions(since, T0 + 4 * HOUR + 2 * MIN, 90 * MIN, grace)
    assert later == {"BTCUSDT": "warming up: 1m for 242 min, 4h for 235 min", "ETHUSDT": "warming up: 1h for 192 min"}


def test_dataqual_below_the_minimum() -> None:
    model = DataQualModel()
    scores = [model.score(SymbolHealth(symbol="A1", missing_streams=("a1@aggTrade",)), 0),
              model.score(SymbolHealth(symbol="B1", missing_streams=("b1@aggTrade", "b1@kline_5m")), 0)]
    assert dataqual_conditions(scores, 0.90) == {"B1": "DataQual 0.80 < 0.9: 2 streams missing (b1@aggTrade, b1@kline_5m): -0.20"}


def test_alerts_start_and_end_once_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    book = AlertBook()
    caplog.set_level(logging.INFO, "klinestore.jobs.alerts")
    book.update("dataqual", {"A1": "low"}, T0)
    book.update("dataqual", {"A1": "lower"}, T0 + MIN)  # still up: same start, new detail
    assert book.to_list() == [{"kind": "dataqual", "symbol": "A1", "since": "2024-05-01T00:00:00.000Z",
                               "detail": "lower", "level": "warning", "message": "dataqual A1: lower"}]
    book.update("dataqual", {}, T0 + 2 * MIN)
    assert book.to_list() == [] and book.raised == 1
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "alert: dataqual A1: low"),
        ("INFO", "alert cleared: dataqual A1: lower (up since 2024-05-01T00:00:00.000Z)"),
    ]


def test_the_monitor_counts_losses_from_the_event_log() -> None:
    now = [T0]
    events = EventLog(now_ms=lambda: now[0])
    monitor = AlertMonitor(AlertsConfig(max_reconnects_per_hour=1, reconnect_window=600), events, grace_s=60)
    for _ in range(2):
        events.record("market-0", "SUBSCRIBED", "LOST", "closed by exchange")
        events.record("market-0", "LOST", "RECONNECTING", "retry 1")
    monitor.evaluate(T0, [], [])
    assert [a["kind"] for a in monitor.to_list()] == ["reconnects"]
    monitor.evaluate(T0 + 601_000, [], [])
    assert monitor.to_list() == []
