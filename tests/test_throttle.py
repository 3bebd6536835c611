"""Token bucket pacing and rate-limited logging, with a fake clock."""

from __future__ import annotations

import logging

import pytest

from klinestore.ingest.throttle import LogThrottle, TokenBucket
from test_clock import FakeMono


def test_bucket_allows_a_burst_then_paces_at_the_rate() -> None:
    mono = FakeMono()
    bucket = TokenBucket(5.0, mono=mono)
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    waits = [bucket.take() for _ in range(3)]
    assert waits == pytest.approx([0.2, 0.4, 0.6])
    mono.t += 0.6  # the three queued callers have used their slots
    assert bucket.take() == pytest.approx(0.2)


def test_bucket_never_exceeds_the_exchange_limit_over_any_second() -> None:
    mono = FakeMono()
    bucket = TokenBucket(5.0, mono=mono)
    sends = []
    for _ in range(40):
        wait = bucket.take()
        sends.append(mono.t + wait)
    for start in sends:
        assert sum(1 for s in sends if start <= s < start + 1.0) <= 10


def test_log_throttle_holds_back_and_reports_the_count(caplog: pytest.LogCaptureFixture) -> None:
    mono = FakeMono()
    throttle = LogThrottle(logging.getLogger("t"), every=10.0, mono=mono)
    with caplog.at_level(logging.WARNING):
        assert throttle.warning("bad", "bad frame %d", 1)
        assert not any(throttle.warning("bad", "bad frame %d", i) for i in range(2, 50))
        mono.t += 11
        assert throttle.warning("bad", "bad frame %d", 50)
    assert [r.getMessage() for r in caplog.records] == [
        "bad frame 1", "bad frame 50 (48 more like it in the last 10 s)",
    ]
