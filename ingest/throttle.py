"""Rate limiters: control messages to the exchange, and log lines to the operator.

Both are sans-I/O about time (the caller passes the monotonic clock), so they are tested
without sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up.

    The exchange closes a connection that sends more than 10 messages a second (1008), so
    SUBSCRIBE/UNSUBSCRIBE go through one bucket per connection at 5 per second.
    """

    __slots__ = ("rate", "burst", "_tokens", "_at", "_mono")

    def __init__(self, rate: float, burst: float | None = None, *, mono: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate if burst is None else burst)
        self._mono = mono
        self._tokens = self.burst
        self._at = mono()

    def take(self) -> float:
        """Take one token; return how long to wait before using it (0 when one was ready).

        The token is reserved even when the caller must wait, so concurrent callers queue up
        behind each other instead of all waking at once.
        """
        now = self._mono()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class LogThrottle:
    """At most one line per key every ``every`` seconds; the next line says how many were held back.

    The hot path counts every rejected frame; it must never log every rejected frame (a
    malformed-frame storm would then cost more in logging than in ingest).
    """

    __slots__ = ("logger", "every", "_mono", "_last", "_held")

    def __init__(self, logger: logging.Logger, every: float = 10.0, *, mono: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every = every
        self._mono = mono
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless ``key`` logged within ``every`` seconds; True if it was logged."""
        now = self._mono()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        if len(self._last) > 1024:  # bounded: keys are reasons, not ids, but never trust that
            self._last.clear()
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            msg += " (%d more like it in the last %.0f s)"
            args = (*args, held, self.every)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)
