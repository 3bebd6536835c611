"""archive_fill's choice of archives: the days over that open gaps touch, a week back at most, none twice."""

from __future__ import annotations

from datetime import date

from klinestore.jobs.archive_fill import MAX_DAYS, days_to_fetch

DAY_MS = 86_400_000
JAN1 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def test_days_over_that_open_gaps_touch() -> None:
    runs = [("BTCUSDT", "1m", JAN1 + DAY_MS - 600_000, JAN1 + DAY_MS + 3_600_000),  # 01-01 23:50 .. 01-02 01:00
            ("ETHUSDT", "1h", JAN1 + 2 * DAY_MS, JAN1 + 2 * DAY_MS)]  # 01-03, today: not over
    assert days_to_fetch(runs, date(2024, 1, 3), set()) == [("BTCUSDT", date(2024, 1, 1)), ("BTCUSDT", date(2024, 1, 2))]
    assert days_to_fetch(runs, date(2024, 1, 3), {("BTCUSDT", date(2024, 1, 1))}) == [("BTCUSDT", date(2024, 1, 2))]


def test_a_long_gap_is_fetched_only_a_week_back() -> None:
    runs = [("BTCUSDT", "1m", JAN1, JAN1 + 30 * DAY_MS)]
    days = days_to_fetch(runs, date(2024, 1, 31), set())
    assert len(days) == MAX_DAYS and days[0] == ("BTCUSDT", date(2024, 1, 24)) and days[-1][1] == date(2024, 1, 30)
