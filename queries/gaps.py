"""Missing bars: which open times of a range have no (complete) bar, and how to say it.

A bar is *missing* when its open time is in the range and no bar is stored for it; an
*incomplete* bar (resampled from a bucket that lacked a minute, ``is_complete = false``)
counts as missing too unless the caller says otherwise. The bar still open now, and any
later one, cannot be missing: ranges are clamped to it.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from klinestore.core.intervals import bar_open, check_interval, next_open
from klinestore.queries.times import short
from klinestore.storage import TIME, gaps_among

#: Runs listed in a message before "... and N more".
SHOWN_RUNS = 5


def expected_end(interval: str, end_ms: int | None, now_ms: int | None = None) -> int:
    """``end_ms`` clamped to the open time of the bar still open now (it cannot be missing)."""
    check_interval(interval)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    current = bar_open(now, interval)
    return current if end_ms is None else min(end_ms, current)


def missing_runs(
    frame: pl.DataFrame, interval: str, start_ms: int, end_ms: int, *, count_incomplete: bool
) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` open-time runs of ``[start_ms, end_ms)`` absent from ``frame``.

    ``frame`` holds one symbol's bars (public columns, one row per open time).
    """
    if end_ms <= start_ms:
        return []
    present = frame.filter(pl.col("is_complete")) if count_incomplete else frame
    opens = present.get_column("open_time").dt.epoch("ms").to_numpy() if present.height else np.empty(0, np.int64)
    return gaps_among(opens, interval, start_ms, end_ms)


def run_length(first: int, last: int, interval: str) -> int:
    """How many bars of ``interval`` open in ``[first, last]``."""
    if interval != "1M":
        return (last - first) // (next_open(first, interval) - first) + 1
    count, at = 1, first
    while at < last:
        at, count = next_open(at, interval), count + 1
    return count


def missing_count(runs: list[tuple[int, int]], interval: str) -> int:
    return sum(run_length(a, b, interval) for a, b in runs)


def gap_frame(runs: list[tuple[int, int]], interval: str) -> pl.DataFrame:
    """Runs as a frame: ``first_missing``, ``last_missing`` (UTC open times), ``bars``."""
    return pl.DataFrame(
        {
            "first_missing": [a for a, _ in runs], "last_missing": [b for _, b in runs],
            "bars": [run_length(a, b, interval) for a, b in runs],
        },
        schema={"first_missing": pl.Int64(), "last_missing": pl.Int64(), "bars": pl.Int64()},
    ).with_columns(pl.col("first_missing", "last_missing").cast(TIME))


def describe_runs(runs: list[tuple[int, int]], interval: str, *, shown: int = SHOWN_RUNS) -> str:
    """``2024-01-03 10:00 .. 2024-01-03 10:04 (5 bars); ...`` for the first runs, then a count."""
    parts = []
    for first, last in runs[:shown]:
        count = run_length(first, last, interval)
        span = short(first) if first == last else f"{short(first)} .. {short(last)}"
        parts.append(f"{span} ({count} bar{'s' if count != 1 else ''})")
    if len(runs) > shown:
        parts.append(f"and {len(runs) - shown} more run{'s' if len(runs) - shown != 1 else ''}")
    return "; ".join(parts)
