"""Reconciliation comparison: the seed's fields and tolerances."""

from __future__ import annotations

import pytest

from klinestore.core.schema import Bar
from klinestore.jobs.compare import compare_bars


def bar(**changes: float) -> Bar:
    base = dict(symbol="BTCUSDT", interval="1m", open_time=0, close_time=59_999, open=100.0, high=101.0,
                low=99.0, close=100.5, volume=10.0, quote_volume=1000.0, trades=5, taker_buy_volume=4.0,
                taker_buy_quote_volume=400.0)
    return Bar(**{**base, **changes})


def test_within_tolerance_agrees() -> None:
    assert compare_bars(bar(close=100.5 * 1.00009, volume=10.09), bar(), price_tolerance=1e-4, volume_tolerance=0.01) == []


def test_each_field_beyond_tolerance_is_reported() -> None:
    diffs = compare_bars(bar(close=100.7, high=102, low=98, volume=11), bar(), price_tolerance=1e-4, volume_tolerance=0.01)
    assert [d.field for d in diffs] == ["close", "high", "low", "volume"]
    assert diffs[0].value == 100.7 and diffs[0].ref_value == 100.5


def test_zero_reference_volume_does_not_divide_by_zero() -> None:
    assert compare_bars(bar(volume=0.0), bar(volume=0.0), price_tolerance=1e-4, volume_tolerance=0.01) == []
    [diff] = compare_bars(bar(volume=1.0), bar(volume=0.0), price_tolerance=1e-4, volume_tolerance=0.01)
    assert diff.field == "volume" and diff.rel_diff == float("inf")


def test_different_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        compare_bars(bar(open_time=60_000), bar(), price_tolerance=1e-4, volume_tolerance=0.01)
