"""Reconnect delays: exponential, capped, jittered, and bounded per episode (seed v6.4 §3.1).

The seed's schedule is ``base · 2^n`` capped at ``max_delay``, each delay spread by
``±jitter_ratio`` (1 s, 2 s, 4 s, ... 32 s, 60 s, 60 s ...), at most ``max_retries`` per
episode. An episode ends once a session has delivered data for ``reconnect.reset_after``
seconds (``reset``; a SUBSCRIBE acknowledgement alone is not enough, or a server that accepts
and then drops is hammered at the base delay) or with exhaustion, after which the connection
is FAILED and retried on the slow ``failed_retry_interval`` cadence.

Jitter matters more than it looks: after an exchange-wide disconnect every connection of
every client retries at once, and identical delays keep them in lock step. The delay
sequence is an injectable generator so tests can pin it and other policies can plug in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from klinestore.ingest.config import ReconnectConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffPolicy:
    base: float = 1.0
    cap: float = 60.0
    jitter: float = 0.1
    max_retries: int = 10

    @classmethod
    def from_config(cls, config: ReconnectConfig) -> BackoffPolicy:
        return cls(
            base=config.base_delay, cap=config.max_delay, jitter=config.jitter_ratio,
            max_retries=config.max_retries,
        )


def exponential_delays(policy: BackoffPolicy, rng: random.Random) -> Iterator[float]:
    """``min(cap, base · 2^n) · (1 ± jitter)`` for n = 0, 1, 2, ... (never ends)."""
    n = 0
    while True:
        delay = policy.cap if n >= 63 else min(policy.cap, policy.base * 2**n)
        yield delay * (1.0 + policy.jitter * (2.0 * rng.random() - 1.0))
        n += 1


DelayFactory = Callable[[BackoffPolicy, random.Random], Iterator[float]]


class Backoff:
    """One connection's retry episode: ``next_delay()`` until it returns None, ``reset()`` on success."""

    __slots__ = ("policy", "attempts", "_rng", "_factory", "_delays")

    def __init__(
        self,
        policy: BackoffPolicy,
        *,
        rng: random.Random | None = None,
        delays: DelayFactory = exponential_delays,
    ) -> None:
        self.policy = policy
        self.attempts = 0
        self._rng = rng or random.Random()
        self._factory = delays
        self._delays = delays(policy, self._rng)

    @property
    def exhausted(self) -> bool:
        return self.attempts >= self.policy.max_retries

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt, or None when the episode's retries are spent."""
        if self.exhausted:
            return None
        self.attempts += 1
        return next(self._delays)

    def reset(self) -> None:
        """Start a new episode (after sustained delivery, or after a FAILED pause)."""
        self.attempts = 0
        self._delays = self._factory(self.policy, self._rng)
