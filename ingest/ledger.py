"""The API-call ledger: every REST call by endpoint, with its request weight.

Totals since start (status.json's ``ledger``) and per exchange minute (the ``api_calls``
table: minute, endpoint, calls, weight). The per-minute rows are bounded: the newest
``keep_minutes`` minutes are kept, older ones are dropped after the table has had a day to
take them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class EndpointTotals:
    calls: int = 0
    weight: int = 0
    errors: dict[int, int] = field(default_factory=dict)  # HTTP status (0: transport) -> count

    def to_dict(self) -> dict[str, object]:
        return {"calls": self.calls, "weight": self.weight, "errors": {str(k): v for k, v in sorted(self.errors.items())}}


class ApiLedger:
    """REST calls and weights by endpoint, in total and per exchange minute."""

    def __init__(self, keep_minutes: int = 1440) -> None:
        self.keep_minutes = keep_minutes
        self._totals: dict[str, EndpointTotals] = {}
        self._minutes: OrderedDict[tuple[int, str], list[int]] = OrderedDict()

    def record(self, endpoint: str, weight: int, minute_ms: int, status: int) -> None:
        """One request sent (whatever its outcome: the exchange counts the weight of failures too)."""
        totals = self._totals.get(endpoint)
        if totals is None:
            totals = self._totals[endpoint] = EndpointTotals()
        totals.calls += 1
        totals.weight += weight
        if status != 200:
            totals.errors[status] = totals.errors.get(status, 0) + 1
        row = self._minutes.get((minute_ms, endpoint))
        if row is None:
            row = self._minutes[(minute_ms, endpoint)] = [0, 0]
            oldest_kept = minute_ms - self.keep_minutes * 60_000
            while self._minutes and next(iter(self._minutes))[0] < oldest_kept:
                self._minutes.popitem(last=False)
        row[0] += 1
        row[1] += weight

    def calls(self, endpoint: str) -> int:
        totals = self._totals.get(endpoint)
        return totals.calls if totals else 0

    def totals(self) -> dict[str, dict[str, object]]:
        """``{endpoint: {"calls", "weight", "errors"}}`` since start."""
        return {name: t.to_dict() for name, t in sorted(self._totals.items())}

    def rows(self, since_minute_ms: int = 0) -> list[tuple[int, str, int, int]]:
        """``(minute_ms, endpoint, calls, weight)`` rows from ``since_minute_ms`` on, oldest first."""
        return sorted((m, e, c, w) for (m, e), (c, w) in self._minutes.items() if m >= since_minute_ms)
