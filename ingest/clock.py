"""The exchange clock: the service's "now" for bars, never the local wall clock.

A bar closes when the *exchange* says so, and the local clock can be minutes off (or, with the
simulator, run 60 times slower than the exchange). So "now" is anchored on the exchange's own
times: ``/fapi/v1/time`` at start (``sync``) and the event time ``E`` of every message
(``observe``), interpolated between them with the monotonic clock.

The interpolation rate is learned: a real exchange runs at 1 exchange-second per second, the
simulator at ``--speed`` of them. The rate is the slope of the newest event time against the
first anchor, once enough real time has passed to measure it; within 5 % of 1 it is exactly 1.
Event times arrive late by the network latency, so an event never pulls the clock back: the
estimate only moves forward (a hard ``sync`` may correct it either way).

An event time more than ``MAX_LEAD_MS`` ahead of the estimate is not believed at once: one
corrupt ``E`` (the protocol allows any time up to 2^53 ms, year 287 396) would otherwise move
"now" centuries ahead for good, and with it bar readiness, gaps, the weight budget's minutes
and every timestamp of status.json. Such a time is counted (``outliers``) and taken only when
``CONFIRMATIONS`` events in a row, spread over ``CONFIRM_SPAN_S`` real seconds at least, agree
with it (a real jump: the host slept, the estimate fell behind), so neither a lone bad frame
nor a burst of them moves the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Real seconds of observations before the rate is estimated.
RATE_MIN_SPAN_S = 1.0
#: Rates within this of 1 are a real-time exchange.
RATE_SNAP = 0.05
#: An event time this far ahead of the estimate (exchange ms) is an outlier until confirmed.
MAX_LEAD_MS = 3_600_000
#: Consecutive outliers within ``MAX_LEAD_MS`` of each other that make the clock jump...
CONFIRMATIONS = 3
#: ...once they have kept coming for this many real seconds.
CONFIRM_SPAN_S = 1.0


class ExchangeClock:
    """Exchange time in UTC milliseconds; ``now_ms()`` is None until the first sync or event."""

    __slots__ = ("_mono", "_anchor_ex", "_anchor_mono", "_first_ex", "_first_mono", "_last", "rate", "_fixed_rate",
                 "outliers", "_ahead", "_ahead_count", "_ahead_since")

    def __init__(self, mono: Callable[[], float] = time.monotonic, *, rate: float | None = None) -> None:
        self._mono = mono
        self._anchor_ex = 0.0
        self._anchor_mono = 0.0
        self._first_ex = -1.0
        self._first_mono = 0.0
        self._last = 0
        self._fixed_rate = rate is not None
        self.rate = 1.0 if rate is None else rate
        self.outliers = 0  # event times too far ahead, not (yet) believed
        self._ahead = 0  # the latest of them
        self._ahead_count = 0  # how many agreeing ones in a row
        self._ahead_since = 0.0  # monotonic time of the first of them

    @property
    def synced(self) -> bool:
        return self._first_ex >= 0

    def sync(self, server_ms: int, rtt_s: float = 0.0) -> None:
        """Anchor on the server's time, measured with round trip ``rtt_s`` (half of it is the delay)."""
        m = self._mono()
        self._anchor_ex = server_ms + rtt_s * 500.0 * self.rate
        self._anchor_mono = m
        self._last = 0
        if self._first_ex < 0:
            self._first_ex, self._first_mono = self._anchor_ex, m

    def observe(self, event_ms: int, mono: float | None = None) -> None:
        """An exchange event time: the clock is at least this late now."""
        m = self._mono() if mono is None else mono
        if self._first_ex < 0:
            self._first_ex, self._first_mono = float(event_ms), m
            self._anchor_ex, self._anchor_mono = float(event_ms), m
            return
        estimate = self._anchor_ex + (m - self._anchor_mono) * 1000.0 * self.rate
        if event_ms > estimate + MAX_LEAD_MS:
            if self._confirmed(event_ms, m):  # a jump, not a rate: the rate is measured afresh from here
                self._first_ex, self._first_mono = float(event_ms), m
                self._anchor_ex, self._anchor_mono = float(event_ms), m
                self._ahead_count = 0
            return
        self._ahead_count = 0
        if event_ms > estimate:
            self._anchor_ex, self._anchor_mono = float(event_ms), m
            if not self._fixed_rate and m - self._first_mono >= RATE_MIN_SPAN_S:
                rate = (event_ms - self._first_ex) / ((m - self._first_mono) * 1000.0)
                self.rate = 1.0 if rate < 1.0 + RATE_SNAP else rate

    def _confirmed(self, event_ms: int, mono: float) -> bool:
        """Whether this far-ahead time confirms a jump: enough agreeing ones in a row, for long enough."""
        self.outliers += 1
        if self._ahead_count > 0 and abs(event_ms - self._ahead) <= MAX_LEAD_MS:
            self._ahead_count += 1
        else:
            self._ahead_count, self._ahead_since = 1, mono
        self._ahead = event_ms
        return self._ahead_count >= CONFIRMATIONS and mono - self._ahead_since >= CONFIRM_SPAN_S

    def now_ms(self) -> int | None:
        """Exchange time now (non-decreasing), or None before any exchange time was seen."""
        if self._first_ex < 0:
            return None
        now = int(self._anchor_ex + (self._mono() - self._anchor_mono) * 1000.0 * self.rate)
        if now < self._last:
            return self._last
        self._last = now
        return now

    def seconds_until(self, exchange_ms: int) -> float:
        """Real seconds until the exchange clock reaches ``exchange_ms`` (0 if past or unsynced)."""
        now = self.now_ms()
        if now is None or exchange_ms <= now:
            return 0.0
        return (exchange_ms - now) / 1000.0 / self.rate

    def seconds_to_arrive(self, exchange_ms: int, latency_s: float) -> float:
        """Real seconds until a message the exchange sends at ``exchange_ms`` has had ``latency_s``
        real seconds to arrive (0 if that is past or the clock is unsynced).

        Latency is real time: on a fast exchange clock (the simulator at 1200x) a grace of
        3 exchange seconds is 2.5 ms, less than one of its pushes takes to cross the socket.
        """
        now = self.now_ms()
        if now is None:
            return 0.0
        return max(0.0, (exchange_ms - now) / 1000.0 / self.rate + latency_s)
