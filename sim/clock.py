"""The exchange clock: exchange time runs ``speed`` times faster than the host's.

Every exchange timer (kline updates, pings, connection age, weight minutes, bans, listings)
reads this clock, so a test at speed 600 sees ten exchange minutes pass in a real second.
It is built on the monotonic clock: wall-clock jumps on the host never move the exchange.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timezone

from klinestore.core.intervals import MINUTE_MS
from klinestore.sim.errors import SimConfigError


class ExchangeClock:
    """``now_ms() = start_ms + elapsed_real * speed``, read-only and thread-safe."""

    __slots__ = ("start_ms", "speed", "_monotonic", "_t0")

    def __init__(self, start_ms: int, speed: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.start_ms = start_ms
        self.speed = speed
        self._monotonic = monotonic
        self._t0 = monotonic()

    def restart(self) -> None:
        """Exchange time is ``start_ms`` now (the simulator calls this when it starts serving)."""
        self._t0 = self._monotonic()

    def now_ms(self) -> int:
        return self.start_ms + int((self._monotonic() - self._t0) * 1000.0 * self.speed)

    def real_seconds(self, exchange_ms: float) -> float:
        """Real seconds that ``exchange_ms`` of exchange time take."""
        return exchange_ms / 1000.0 / self.speed

    def real_until(self, at_ms: int) -> float:
        """Real seconds from now until exchange time ``at_ms`` (negative if past)."""
        return self.real_seconds(at_ms - self.now_ms())


def now_floor_minute() -> int:
    """The wall clock now, floored to the UTC minute (the default exchange start)."""
    return int(time.time() * 1000) // MINUTE_MS * MINUTE_MS


def parse_time(text: str, option: str = "start") -> int:
    """Parse ``2024-05-01``, ``2024-05-01T12:00``, ``...Z``, ``...+00:00`` or epoch ms into UTC ms.

    A time without a zone is UTC: the exchange has no other.
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise SimConfigError(option, f"expected an ISO time like 2024-05-01T12:00Z or epoch ms, got {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    ms = parsed.timestamp() * 1000
    if not math.isfinite(ms) or ms < 0:
        raise SimConfigError(option, f"time before 1970: {text!r}")
    return int(round(ms))


def iso(ms: int) -> str:
    """UTC ISO text of an exchange time, for logs and control replies."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
