"""Query parameters of Binance's REST endpoints, checked as Binance checks them.

Every failure is an :class:`ApiError` carrying Binance's code and message (HTTP 400). The
simulator and the gateway both read ``limit``, ``startTime`` and ``endTime`` here and choose
the bars of a klines answer with :func:`bar_window`, so the two answer bad input, and pick
rows, the same way.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import datetime, timezone

from klinestore.core.errors import InvalidInterval, InvalidSymbol
from klinestore.core.intervals import HOUR_MS, bar_open, interval_ms, next_open
from klinestore.ingest.protocol.http import Request


class ApiError(Exception):
    """A Binance error answer: HTTP ``status`` with ``{"code": code, "msg": msg}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        self.code, self.msg, self.status = code, msg, status
        super().__init__(msg)

    def body(self) -> dict[str, int | str]:
        return {"code": self.code, "msg": self.msg}


def invalid_path(path: str, method: str) -> dict[str, int | str]:
    """Binance's body for a path it does not serve (HTTP 404) or a method it refuses (405)."""
    return {"code": -5000, "msg": f"Path {path}, Method {method} is invalid"}


def mandatory(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def checked(request: Request, name: str, check: Callable[[str], str], code: int, msg: str) -> str:
    """A mandatory parameter through ``check``; Binance's error body if missing or invalid."""
    raw = request.param(name)
    if not raw:
        raise mandatory(name)
    try:
        return check(raw)
    except (InvalidSymbol, InvalidInterval):
        raise ApiError(code, msg) from None


def integer(request: Request, name: str) -> int | None:
    raw = request.param(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(raw)


def limit(request: Request, default: int, maximum: int) -> int:
    value = integer(request, "limit")
    value = default if value is None else value
    if not 1 <= value <= maximum:
        raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
    return value


def time_range(request: Request) -> tuple[int | None, int | None]:
    start, end = integer(request, "startTime"), integer(request, "endTime")
    if start is not None and end is not None and start > end:
        raise ApiError(-1023, "Start time is greater than end time.")
    return start, end


def agg_trades_query(
    request: Request, default_limit: int, max_limit: int,
) -> tuple[int, int | None, int | None, int | None]:
    """``(limit, fromId, startTime, endTime)`` of an aggTrades request, by Binance's rules: at most
    an hour between startTime and endTime."""
    count = limit(request, default_limit, max_limit)
    from_id = integer(request, "fromId")
    start, end = time_range(request)
    if start is not None and end is not None and end - start > HOUR_MS:
        raise ApiError(-1127, "More than 1 hours between startTime and endTime.")
    return count, from_id, start, end


def bar_window(interval: str, start: int | None, end: int | None, limit: int, now: int,
               first_ms: int | None = None) -> tuple[int, int, bool]:
    """Binance's choice of bars: ``(first_open, last_open, from_start)``. From ``startTime`` the
    first ``limit`` bars (keep the head), else the last ``limit`` up to ``endTime`` or now (keep
    the tail); bars open at or after ``startTime`` and at or before ``endTime``. ``first_ms``:
    the symbol's first trade, before which there are no bars to count."""
    if start is not None:
        first = bar_open(start, interval)
        first = first if first >= start else next_open(first, interval)
        if first_ms is not None:
            first = max(first, bar_open(first_ms, interval))
        last = step(first, interval, limit - 1)
        return start, last if end is None else min(last, end), True
    last = bar_open(min(now, end) if end is not None else now, interval)
    return step(last, interval, -(limit - 1)), last, False


def step(open_ms: int, interval: str, n: int) -> int:
    """The open time ``n`` bars after (or before, n < 0) ``open_ms``."""
    if interval != "1M":
        return open_ms + n * interval_ms(interval)
    dt = datetime.fromtimestamp(open_ms / 1000, tz=timezone.utc)
    months = dt.year * 12 + dt.month - 1 + n
    return calendar.timegm((months // 12, months % 12 + 1, 1, 0, 0, 0)) * 1000
