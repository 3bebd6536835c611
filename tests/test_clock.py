"""The exchange clock follows server and event times, at the exchange's own rate."""

from __future__ import annotations

from klinestore.ingest.clock import ExchangeClock


class FakeMono:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_unsynced_clock_has_no_time() -> None:
    clock = ExchangeClock(FakeMono())
    assert not clock.synced and clock.now_ms() is None and clock.seconds_until(10**12) == 0.0


def test_server_time_then_monotonic_interpolation() -> None:
    mono = FakeMono()
    clock = ExchangeClock(mono)
    clock.sync(1_700_000_000_000, rtt_s=0.02)
    assert clock.now_ms() == 1_700_000_000_010
    mono.t += 2.5
    assert clock.now_ms() == 1_700_000_002_510


def test_late_events_never_pull_the_clock_back_but_early_ones_push_it() -> None:
    mono = FakeMono()
    clock = ExchangeClock(mono)
    clock.sync(1_000_000)
    mono.t += 1.0
    clock.observe(999_000)  # an event sent a while ago
    assert clock.now_ms() == 1_001_000
    clock.observe(1_005_000)  # the local estimate was behind
    assert clock.now_ms() == 1_005_000


def test_a_fast_exchange_rate_is_learned() -> None:
    mono = FakeMono()
    clock = ExchangeClock(mono)
    clock.sync(0)
    for _ in range(20):  # a simulator at 60x: 60 exchange seconds per real second
        mono.t += 0.1
        clock.observe(int((mono.t - 100.0) * 60_000))
    assert 59 < clock.rate < 61
    mono.t += 0.5
    assert abs(clock.now_ms() - 150_000) < 500
    assert abs(clock.seconds_until(clock.now_ms() + 60_000) - 1.0) < 0.02


def test_a_real_time_exchange_keeps_rate_one() -> None:
    mono = FakeMono()
    clock = ExchangeClock(mono)
    clock.sync(0)
    for _ in range(30):
        mono.t += 0.1
        clock.observe(int((mono.t - 100.0) * 1010))  # 1 % skew is not a different rate
    assert clock.rate == 1.0


def test_one_far_future_event_time_does_not_move_the_clock() -> None:
    mono = FakeMono()
    clock = ExchangeClock(mono)
    clock.sync(1_000_000)
    clock.observe(253_402_300_799_999)  # a corrupt E (the protocol's bound: the last ms of year 9999)
    mono.t += 1.0
    clock.observe(1_001_000)
    assert clock.now_ms() == 1_001_000 and clock.outliers == 1 and clock.rate == 1.0


def test_scattered_outliers_never_add_up_to_a_jump() -> None:
    mono = FakeMono()
    clock = ExchangeClock(mono)
    clock.sync(0)
    for i in range(10):
        clock.observe(10**12 * (i + 1))  # far ahead, but no two of them agree
    assert clock.now_ms() == 0 and clock.outliers == 10


def test_a_real_jump_is_taken_once_confirmed_and_does_not_skew_the_rate() -> None:
    mono = FakeMono()
    clock = ExchangeClock(mono)
    clock.sync(0)
    mono.t += 2.0
    clock.observe(2_000)
    jumped = 2_000 + 5 * 3_600_000  # the host slept five hours: the estimate is far behind
    for i in range(3):  # a burst that agrees is not enough...
        clock.observe(jumped + i)
    assert clock.now_ms() == 2_000
    for i in range(20):  # ...events that go on agreeing for a second are
        clock.observe(jumped + i * 100)
        mono.t += 0.1
        if clock.now_ms() > jumped:  # type: ignore[operator]
            break
    assert 1.0 <= mono.t - 102.0 <= 1.25 and abs(clock.now_ms() - (jumped + i * 100 + 100)) <= 1  # type: ignore[operator]
    base, since = jumped + i * 100, mono.t - 0.1
    for _ in range(20):
        mono.t += 0.1
        clock.observe(base + int((mono.t - since) * 1000))
    assert clock.rate == 1.0


def test_a_message_gets_its_latency_in_real_seconds_at_any_rate() -> None:
    mono = FakeMono()
    clock = ExchangeClock(mono, rate=1200.0)
    clock.sync(1_000_000)
    assert clock.seconds_to_arrive(1_000_000 + 1_200, 3.0) == 3.001  # 1.2 exchange s ahead: 1 ms, then 3 s
    mono.t += 1.0  # 1200 exchange seconds later: sent 1 real second ago, 2 s of its grace left
    assert abs(clock.seconds_to_arrive(1_000_000, 3.0) - 2.0) < 1e-9
    mono.t += 5.0
    assert clock.seconds_to_arrive(1_000_000, 3.0) == 0.0
    assert ExchangeClock(FakeMono()).seconds_to_arrive(10**12, 3.0) == 0.0  # unsynced: nothing to wait for
