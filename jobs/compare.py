"""Kline comparison for reconciliation (seed v6.4 §5.1), pure.

Fields checked: close, high, low (relative tolerance ``price``, 0.01 %) and volume (relative
tolerance ``volume``, 1 %). The seed divides by the reference value; a reference of 0 (an
empty bar's volume) would divide by zero there, so a zero reference matches only a value
within an absolute 1e-12.
"""

from __future__ import annotations

from dataclasses import dataclass

from klinestore.core.schema import Bar

PRICE_FIELDS = ("close", "high", "low")
VOLUME_FIELDS = ("volume",)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One field of one bar that differs beyond its tolerance."""

    field: str
    value: float
    ref_value: float
    rel_diff: float

    def __str__(self) -> str:
        return f"{self.field} {self.value!r} vs {self.ref_value!r} ({self.rel_diff:.4%})"


def relative_diff(value: float, ref: float) -> float:
    if ref == 0:
        return 0.0 if abs(value) <= 1e-12 else float("inf")
    return abs(value - ref) / abs(ref)


def compare_bars(bar: Bar, ref: Bar, *, price_tolerance: float, volume_tolerance: float) -> list[Mismatch]:
    """Fields of ``bar`` that differ from ``ref`` beyond tolerance (empty list: they agree)."""
    if bar.key != ref.key:
        raise ValueError(f"comparing different bars: {bar.key} vs {ref.key}")
    out: list[Mismatch] = []
    for name, tolerance in [(f, price_tolerance) for f in PRICE_FIELDS] + [(f, volume_tolerance) for f in VOLUME_FIELDS]:
        value, ref_value = getattr(bar, name), getattr(ref, name)
        diff = relative_diff(value, ref_value)
        if diff > tolerance:
            out.append(Mismatch(name, value, ref_value, diff))
    return out
