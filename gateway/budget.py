"""A request-weight budget per client and clock minute, so one bot cannot starve the rest.

Weights are Binance's (``klinestore.ingest.protocol.rest.path_weight``); the budget is local:
the gateway costs the exchange nothing, but its CPU is shared. A client is its API key
header (``X-MBX-APIKEY``) when it sends one, else its connection. Over the budget a request
gets Binance's 429 body with ``Retry-After`` (seconds to the next minute); the account of a
minute is forgotten when the minute turns, so the table stays as small as the clients of
one minute (and at most ``MAX_CLIENTS``; beyond it the newest client shares one account).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_CLIENTS = 100_000
_OVERFLOW = "\x00overflow"


@dataclass(frozen=True, slots=True)
class Charge:
    ok: bool
    used: int  # weight this client used this minute, this request included when ok
    retry_after: int = 0  # seconds, when refused


class WeightBudget:
    """``charge(client, weight)`` admits a request or refuses it."""

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = clock
        self._minute = -1
        self._used: dict[str, int] = {}
        self.refused = 0

    def charge(self, client: str, weight: int) -> Charge:
        now = self._clock()
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._used = minute, {}
        if client not in self._used and len(self._used) >= MAX_CLIENTS:
            client = _OVERFLOW
        used = self._used.get(client, 0)
        if used + weight > self.limit:
            self.refused += 1
            return Charge(False, used, max(1, math.ceil((minute + 1) * 60 - now)))
        self._used[client] = used + weight
        return Charge(True, used + weight)

    def used(self, client: str) -> int:
        return self._used.get(client, 0) if int(self._clock() // 60) == self._minute else 0
