"""Binance kline intervals and their UTC alignment.

Bars are identified by their open time in UTC milliseconds; ``close = open + length - 1``.
Fixed intervals align on multiples of their length since the epoch, except weeks, which
start on Monday (the epoch was a Thursday), and months, which follow the calendar.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timezone

from klinestore.core.errors import InvalidInterval

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
_WEEK_OFFSET_MS = 4 * DAY_MS  # 1970-01-05 was the first Monday

_MINUTES = {
    "1m": 1, "3m": 3, "5m": 5, "15m": 15, "30m": 30,
    "1h": 60, "2h": 120, "4h": 240, "6h": 360, "8h": 480, "12h": 720,
    "1d": 1440, "3d": 4320, "1w": 10080,
}

#: Every futures kline interval, shortest first (``1M`` is the calendar month).
INTERVALS: tuple[str, ...] = (*_MINUTES, "1M")


def check_interval(interval: str) -> str:
    """Return ``interval`` unchanged, or raise :class:`InvalidInterval`."""
    if interval not in _MINUTES and interval != "1M":
        raise InvalidInterval(f"unknown interval {interval!r}; expected one of {', '.join(INTERVALS)}")
    return interval


def interval_ms(interval: str) -> int:
    """Length of a fixed interval in ms (``1M`` has no fixed length and raises)."""
    try:
        return _MINUTES[interval] * MINUTE_MS
    except KeyError:
        check_interval(interval)
        raise InvalidInterval("1M has no fixed length; use bar_open/bar_close") from None


def interval_sort_key(interval: str) -> int:
    """Order intervals by length (``1M`` last)."""
    return _MINUTES.get(check_interval(interval), 10**9)


def bar_open(ts_ms: int, interval: str) -> int:
    """Open time of the bar of ``interval`` that contains ``ts_ms``."""
    if interval == "1M":
        dt = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
        return int(datetime(dt.year, dt.month, 1, tzinfo=timezone.utc).timestamp() * 1000)
    length = interval_ms(interval)
    if interval == "1w":
        return (ts_ms - _WEEK_OFFSET_MS) // length * length + _WEEK_OFFSET_MS
    return ts_ms // length * length


def next_open(open_ms: int, interval: str) -> int:
    """Open time of the bar after the one opening at ``open_ms``."""
    if interval == "1M":
        dt = datetime.fromtimestamp(open_ms / 1000, tz=timezone.utc)
        year, month = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
        return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp() * 1000)
    return open_ms + interval_ms(interval)


def bar_close(open_ms: int, interval: str) -> int:
    """Close time of the bar opening at ``open_ms`` (last millisecond inside it)."""
    return next_open(open_ms, interval) - 1


def minutes_in(open_ms: int, interval: str) -> int:
    """How many 1m bars the bar opening at ``open_ms`` spans."""
    return (next_open(open_ms, interval) - open_ms) // MINUTE_MS


def is_aligned(open_ms: int, interval: str) -> bool:
    """True when ``open_ms`` is a valid open time for ``interval``."""
    return bar_open(open_ms, interval) == open_ms


def month_days(year: int, month: int) -> int:
    """Days in a calendar month (used for month partitions)."""
    return calendar.monthrange(year, month)[1]
