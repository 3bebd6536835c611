"""Alerts (seed v4.4's thresholds): pure rules, and the book of which alerts are up since when.

* ``reconnects``: more than ``alerts.max_reconnects_per_hour`` connection losses (transitions
  to LOST) within ``alerts.reconnect_window`` (an hour).
* ``warming_up`` (per symbol): a series warming up longer than ``alerts.warming_up_max``
  (90 min). A series cannot be ready before the first bar that closes after it started
  warming up (a 4h series started at 10:07 waits until 12:00 in WebSocket-only mode), so it
  is overdue only past that close plus the heartbeat timeout as well.
* ``dataqual`` (per symbol): a score below ``alerts.dataqual_min`` (0.90), with its reasons.

An alert starts with a WARNING log line and ends with an INFO one; status.json lists the
alerts up now (``kind``, ``symbol`` when it concerns one, ``since``, ``detail``, ``level``,
``message``). All times are exchange time.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from klinestore.core.intervals import bar_open, next_open
from klinestore.core.times import iso
from klinestore.ingest.eventlog import EventLog
from klinestore.jobs.config import AlertsConfig
from klinestore.jobs.dataqual import Score

log = logging.getLogger(__name__)

#: Connection losses remembered for the reconnect rule (more than any sane limit).
MAX_LOSSES = 10_000

AlertKey = tuple[str, str | None]  # kind, symbol


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    symbol: str | None
    since_ms: int
    detail: str

    @property
    def message(self) -> str:
        return f"{self.kind}{' ' + self.symbol if self.symbol else ''}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.symbol is not None:
            out["symbol"] = self.symbol
        out.update(since=iso(self.since_ms), detail=self.detail, level="warning", message=self.message)
        return out


def reconnect_condition(losses: Iterable[int], now_ms: int, window_ms: int, limit: int) -> str | None:
    """Detail of the reconnect alert, or None: more than ``limit`` losses in the window before ``now_ms``."""
    count = sum(1 for t in losses if now_ms - window_ms < t <= now_ms)
    if count <= limit:
        return None
    return f"{count} connection losses in the last {window_ms / 3_600_000:g} h (more than {limit})"


def warming_deadline(since_ms: int, interval: str, max_ms: int, grace_ms: int) -> int:
    """When a series warming up since ``since_ms`` is overdue."""
    first_close = next_open(bar_open(since_ms, interval), interval)
    return max(since_ms + max_ms, first_close + grace_ms)


def warming_conditions(
    warming_since: Mapping[tuple[str, str], int], now_ms: int, max_ms: int, grace_ms: int
) -> dict[str, str]:
    """Per symbol, the detail of its warming_up alert (only symbols with an overdue series)."""
    overdue: dict[str, list[str]] = {}
    for (symbol, interval), since in sorted(warming_since.items()):
        if now_ms >= warming_deadline(since, interval, max_ms, grace_ms):
            overdue.setdefault(symbol, []).append(f"{interval} for {(now_ms - since) / 60_000:.0f} min")
    return {symbol: "warming up: " + ", ".join(parts) for symbol, parts in overdue.items()}


def dataqual_conditions(scores: Iterable[Score], minimum: float) -> dict[str, str]:
    """Per symbol scoring below ``minimum``, the detail of its alert."""
    return {s.symbol: f"DataQual {s.score:.2f} < {minimum:g}: {s.reason_text}" for s in scores if s.score < minimum}


class AlertBook:
    """The alerts up now; ``update`` starts and ends them (and logs both)."""

    def __init__(self) -> None:
        self.active: dict[AlertKey, Alert] = {}
        self.raised = 0

    def update(self, kind: str, conditions: Mapping[str | None, str], now_ms: int) -> None:
        """The current conditions of one kind: symbol (None: global) -> detail."""
        for key in [k for k in self.active if k[0] == kind and k[1] not in conditions]:
            alert = self.active.pop(key)
            log.info("alert cleared: %s (up since %s)", alert.message, iso(alert.since_ms))
        for symbol, detail in conditions.items():
            known = self.active.get((kind, symbol))
            if known is None:
                alert = Alert(kind, symbol, now_ms, detail)
                self.raised += 1
                log.warning("alert: %s", alert.message)
            else:
                alert = Alert(kind, symbol, known.since_ms, detail)
            self.active[(kind, symbol)] = alert

    def to_list(self) -> list[dict[str, Any]]:
        return [a.to_dict() for _, a in sorted(self.active.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))]


class AlertMonitor:
    """Feeds the rules from the service's state at every heartbeat."""

    def __init__(self, config: AlertsConfig, events: EventLog, *, grace_s: float) -> None:
        self.config = config
        self.events = events
        self.grace_ms = int(grace_s * 1000)
        self.book = AlertBook()
        self._losses: deque[int] = deque(maxlen=MAX_LOSSES)
        self._seq = 0
        self._warming_since: dict[tuple[str, str], int] = {}

    def evaluate(self, now_ms: int, warming_up: Iterable[tuple[str, str]], scores: Iterable[Score]) -> None:
        c = self.config
        for event in self.events.since(self._seq):
            self._seq = event.seq
            if event.to_state == "LOST":
                self._losses.append(event.ts_ms)
        window_ms = int(c.reconnect_window * 1000)
        while self._losses and self._losses[0] <= now_ms - window_ms:
            self._losses.popleft()
        reconnects = reconnect_condition(self._losses, now_ms, window_ms, c.max_reconnects_per_hour)
        self.book.update("reconnects", {None: reconnects} if reconnects else {}, now_ms)
        warming = set(warming_up)
        self._warming_since = {k: self._warming_since.get(k, now_ms) for k in warming}
        self.book.update("warming_up", warming_conditions(self._warming_since, now_ms,
                                                          int(c.warming_up_max * 1000), self.grace_ms), now_ms)
        self.book.update("dataqual", dataqual_conditions(scores, c.dataqual_min), now_ms)

    def to_list(self) -> list[dict[str, Any]]:
        return self.book.to_list()
