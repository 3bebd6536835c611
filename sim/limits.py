"""REQUEST_WEIGHT accounting per exchange-clock UTC minute, with 429 and 418.

Binance counts weight per IP per clock minute; on loopback every client is one IP, so the
simulator keeps one account. Over the limit a request gets 429 with ``Retry-After`` (real
seconds until the exchange minute rolls over, at least 1); a client that goes on after
``ban_after`` 429s in one minute is banned (418) for ``ban_ms`` of exchange time, doubled on
each repeat up to Binance's three days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from klinestore.core.intervals import DAY_MS, MINUTE_MS
from klinestore.sim.clock import ExchangeClock

MAX_BAN_MS = 3 * DAY_MS


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # 200, 429 or 418
    used: int  # weight used this minute, after this request
    retry_after: int | None = None  # real seconds
    banned_until: int | None = None  # exchange ms


class WeightLimiter:
    """The weight account; ``admit`` charges a request or refuses it."""

    def __init__(self, clock: ExchangeClock, limit: int, *, ban_after: int, ban_ms: int) -> None:
        self._clock = clock
        self.limit = limit
        self._ban_after = ban_after
        self._ban_ms = ban_ms
        self._minute = -1
        self._used = 0
        self._refused = 0
        self._banned_until = 0
        self.bans = 0

    def _roll(self, now: int) -> None:
        minute = now // MINUTE_MS
        if minute != self._minute:
            self._minute, self._used, self._refused = minute, 0, 0

    def used(self) -> int:
        self._roll(self._clock.now_ms())
        return self._used

    def admit(self, weight: int) -> Decision:
        now = self._clock.now_ms()
        self._roll(now)
        if now < self._banned_until:
            return Decision(418, self._used, self._retry(self._banned_until), self._banned_until)
        if self._used + weight <= self.limit:
            self._used += weight
            return Decision(200, self._used)
        self._refused += 1
        if self._refused > self._ban_after:
            self.bans += 1
            self._banned_until = now + min(MAX_BAN_MS, self._ban_ms * 2 ** (self.bans - 1))
            return Decision(418, self._used, self._retry(self._banned_until), self._banned_until)
        return Decision(429, self._used, self._retry((now // MINUTE_MS + 1) * MINUTE_MS))

    def _retry(self, until_ms: int) -> int:
        return max(1, math.ceil(self._clock.real_until(until_ms)))
