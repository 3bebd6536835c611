"""Reconnect backoff: the seed's schedule, jitter bounds, exhaustion and reset."""

from __future__ import annotations

import random
from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from klinestore.config import Config
from klinestore.ingest.backoff import Backoff, BackoffPolicy, exponential_delays


def test_defaults_follow_the_seed() -> None:
    policy = BackoffPolicy.from_config(Config().websocket.reconnect)
    assert (policy.base, policy.cap, policy.jitter, policy.max_retries) == (1.0, 60.0, 0.1, 10)
    backoff = Backoff(BackoffPolicy(base=1.0, cap=60.0, jitter=0.0, max_retries=10))
    delays = [backoff.next_delay() for _ in range(11)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, None]
    assert backoff.exhausted


@given(seed=st.integers(0, 2**32), n=st.integers(0, 200))
def test_every_delay_is_within_jitter_of_the_capped_exponential(seed: int, n: int) -> None:
    policy = BackoffPolicy(base=0.5, cap=30.0, jitter=0.1)
    delays = exponential_delays(policy, random.Random(seed))
    for i in range(n + 1):
        delay = next(delays)
    nominal = min(30.0, 0.5 * 2**i)
    assert nominal * 0.9 <= delay <= nominal * 1.1


def test_jitter_spreads_a_pool_of_connections() -> None:
    rng = random.Random(7)
    firsts = {round(Backoff(BackoffPolicy(), rng=rng).next_delay() or 0, 6) for _ in range(50)}
    assert len(firsts) == 50 and min(firsts) >= 0.9 and max(firsts) <= 1.1


def test_reset_starts_a_new_episode() -> None:
    backoff = Backoff(BackoffPolicy(base=1.0, jitter=0.0, max_retries=3))
    assert [backoff.next_delay() for _ in range(4)] == [1, 2, 4, None]
    backoff.reset()
    assert backoff.attempts == 0 and backoff.next_delay() == 1


def test_the_delay_generator_is_injectable() -> None:
    def constant(policy: BackoffPolicy, rng: random.Random) -> Iterator[float]:
        while True:
            yield 0.25

    backoff = Backoff(BackoffPolicy(max_retries=2), delays=constant)
    assert [backoff.next_delay(), backoff.next_delay(), backoff.next_delay()] == [0.25, 0.25, None]
