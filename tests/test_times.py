"""Times as users type them: epoch ms, ISO dates and datetimes (UTC unless an offset says otherwise)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from klinestore.queries.errors import QueryError
from klinestore.queries.times import iso, short, to_ms

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


@pytest.mark.parametrize("value", [
    T0, str(T0), "2024-01-01", "2024-01-01T00:00", "2024-01-01 00:00:00", "2024-01-01T00:00:00Z",
    "2024-01-01T01:00:00+01:00", datetime(2024, 1, 1), datetime(2024, 1, 1, tzinfo=timezone.utc),
    datetime(2023, 12, 31, 19, tzinfo=timezone(timedelta(hours=-5))), date(2024, 1, 1),
    pd.Timestamp("2024-01-01", tz="UTC"), np.datetime64("2024-01-01T00:00"),
])
def test_the_same_instant(value: object) -> None:
    assert to_ms(value) == T0


def test_milliseconds_and_helpers() -> None:
    assert to_ms("2024-01-01T00:00:00.250Z") == T0 + 250
    assert iso(T0) == "2024-01-01T00:00:00Z" and iso(T0 + 5) == "2024-01-01T00:00:00.005Z"
    assert short(T0 + 90_000) == "2024-01-01 00:01:30" and short(T0) == "2024-01-01 00:00"


@pytest.mark.parametrize("value, words", [
    (1_704_067_200, "looks like epoch seconds"), ("next tuesday", "cannot read"), (True, "expected a time"),
    (3.5, "expected epoch ms"),
])
def test_refused_with_a_reason(value: object, words: str) -> None:
    with pytest.raises(QueryError, match=words):
        to_ms(value, name="start")
