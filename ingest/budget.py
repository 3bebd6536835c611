"""The request-weight budget: never spend more than the exchange allows in a minute.

Binance charges each REST request a weight and allows ``REQUEST_WEIGHT`` 2400 per UTC clock
minute (exchange time); past it come 429s, and ignoring those brings a 418 IP ban. The budget
keeps ``weight_margin`` of the limit unused, reserves a request's weight *before* sending it
(so concurrent requests cannot overshoot together), trusts the exchange's own count
(``X-MBX-USED-WEIGHT-1M``) when it is higher, and tells the caller to wait for the next
exchange minute rather than exceed it. The REST client serves waiters by :class:`Priority`.
"""

from __future__ import annotations

import enum

MINUTE_MS = 60_000


class Priority(enum.IntEnum):
    """Who is served first when the budget is short: a request waits while a more urgent one does.

    A book out of sync (start-up and resync snapshots) is blind until served; a back-fill or a
    listing is work the service owes; a periodic check only confirms what is probably right.
    """

    SYNC = 0
    NORMAL = 1
    CHECK = 2


class WeightBudget:
    """Weight used in the current exchange minute, against ``limit · (1 - margin)``."""

    __slots__ = ("limit", "usable", "minute", "used", "waits")

    def __init__(self, limit: int, margin: float) -> None:
        self.limit = limit
        self.usable = max(1, int(limit * (1.0 - margin)))
        self.minute = -1
        self.used = 0
        self.waits = 0  # times a request had to wait for the next minute

    def reserve(self, weight: int, now_ms: int) -> int:
        """Reserve ``weight`` now (return 0) or return the exchange ms to wait for the next minute."""
        self._roll(now_ms)
        if self.used + weight > self.usable and self.used > 0:
            self.waits += 1
            return self.minute + MINUTE_MS - now_ms
        self.used += weight
        return 0

    def observe(self, used: int, minute_ms: int) -> None:
        """The exchange's count for the minute a request was sent in."""
        if minute_ms == self.minute and used > self.used:
            self.used = used

    def remaining(self, now_ms: int) -> int:
        self._roll(now_ms)
        return max(0, self.usable - self.used)

    def _roll(self, now_ms: int) -> None:
        minute = now_ms - now_ms % MINUTE_MS
        if minute != self.minute:
            self.minute = minute
            self.used = 0
