"""Times as users type them, turned into the UTC epoch milliseconds storage speaks.

Accepted everywhere a time is asked for (the Python API, ``--start``/``--end``):

* epoch **milliseconds** as an int or a string of digits (``1704067200000``); a value that
  only makes sense as epoch *seconds* is refused rather than read as 1970;
* ISO dates and datetimes, ``2024-01-01``, ``2024-01-01T12:30``, ``2024-01-01 12:30:00.5``,
  with ``Z`` or an offset; a time without a zone is UTC (exchange time is UTC);
* ``datetime``/``date`` objects (naive ones are UTC) and pandas/NumPy timestamps.

Ranges are half-open on open times, ``[start, end)``, like storage's readers: ``--end
2024-02-01`` ends with the last bar of January, and consecutive ranges never overlap.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any

from klinestore.queries.errors import QueryError

TimeLike = int | str | datetime | date
#: Epoch ms below this (1973-03-03) are almost surely epoch seconds typed by mistake.
_SECONDS_CEILING = 100_000_000_000
_DIGITS = re.compile(r"-?\d+")


def to_ms(value: Any, *, name: str = "time") -> int:
    """UTC epoch milliseconds of ``value`` (see the module docstring for what is accepted)."""
    if isinstance(value, bool):
        raise QueryError(f"{name}: expected a time, got {value!r}")
    if isinstance(value, int):
        return _check_ms(value, name)
    if isinstance(value, str):
        return _parse_text(value.strip(), name)
    if isinstance(value, datetime):
        return _datetime_ms(value)
    if isinstance(value, date):
        return _datetime_ms(datetime(value.year, value.month, value.day))
    to_datetime = getattr(value, "to_pydatetime", None)  # pandas.Timestamp
    if to_datetime is not None:
        return _datetime_ms(to_datetime())
    if type(value).__name__ == "datetime64":  # numpy, without importing it
        return _check_ms(int(value.astype("datetime64[ms]").astype("int64")), name)
    raise QueryError(f"{name}: expected epoch ms, an ISO date/datetime or a datetime, got {type(value).__name__}")


def optional_ms(value: Any, *, name: str) -> int | None:
    return None if value is None else to_ms(value, name=name)


def check_range(start_ms: int | None, end_ms: int | None) -> None:
    """A :class:`QueryError` for a range that ends where or before it starts (a typo, not an empty result)."""
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        word = "empty" if end_ms == start_ms else "reversed"
        raise QueryError(f"{word} range: --start {short(start_ms)} is not before --end {short(end_ms)} "
                         "(--end is exclusive)")


def iso(ms: int) -> str:
    """``2024-01-01T00:00:00Z`` (milliseconds shown only when there are some)."""
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def short(ms: int) -> str:
    """``2024-01-01 00:00`` (for messages; seconds only when there are some)."""
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%d %H:%M:%S" if ms % 60_000 else "%Y-%m-%d %H:%M")


def _parse_text(text: str, name: str) -> int:
    if _DIGITS.fullmatch(text):
        return _check_ms(int(text), name)
    candidate = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise QueryError(
            f"{name}: cannot read {text!r}; use an ISO date or datetime (2024-01-31, 2024-01-31T12:00Z) "
            "or epoch milliseconds"
        ) from None
    return _datetime_ms(parsed)


def _datetime_ms(value: datetime) -> int:
    aware = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    delta = aware - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _check_ms(value: int, name: str) -> int:
    if 0 < abs(value) < _SECONDS_CEILING and abs(value) >= 100_000_000:
        raise QueryError(
            f"{name}: {value} looks like epoch seconds; klinestore takes epoch milliseconds ({value * 1000})"
        )
    return value
