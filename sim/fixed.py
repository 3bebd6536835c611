"""Fixed-point decimals: exchange numbers are integers of units, printed with fixed decimals.

Prices are integers of 10^-price_decimals, quantities of 10^-qty_decimals and quote volumes of
10^-quote_decimals, so every sum the exchange publishes is exact (no float rounding): a
1h quote volume is the exact sum of its minutes', which is what Binance's archives show.
"""

from __future__ import annotations

from functools import lru_cache

from klinestore.sim.errors import ReplayError

_POW10 = tuple(10**i for i in range(40))


def fmt(units: int, decimals: int) -> str:
    """``fmt(1234567, 2) == "12345.67"``; ``fmt(5, 3) == "0.005"``."""
    if decimals == 0:
        return str(units)
    if units < 0:
        return "-" + fmt(-units, decimals)
    text = str(units)
    if len(text) <= decimals:
        text = "0" * (decimals + 1 - len(text)) + text
    return f"{text[:-decimals]}.{text[-decimals:]}"


#: ``fmt`` with memory: prices near the market and common quantities repeat in every depth
#: update, and a dict hit is several times cheaper than formatting again.
fmt_cached = lru_cache(maxsize=1 << 16)(fmt)


def decimals_of(text: str) -> int:
    """Digits after the point in a decimal string (``"1.50"`` -> 2)."""
    _, dot, frac = text.partition(".")
    return len(frac) if dot else 0


def parse_units(text: str, decimals: int) -> int:
    """``parse_units("12.5", 3) == 12500``; refuses more digits than ``decimals`` and non-numbers."""
    head, dot, frac = text.strip().partition(".")
    if len(frac) > decimals or not (head.isdigit() or (head == "" and frac)) or (dot and frac and not frac.isdigit()):
        raise ReplayError(f"not a decimal with at most {decimals} decimals: {text!r}")
    return int(head or "0") * _POW10[decimals] + (int(frac.ljust(decimals, "0")) if decimals else 0)


def rescale(units: int, from_decimals: int, to_decimals: int) -> int:
    """Units of one scale in another (floor when decimals are dropped)."""
    if to_decimals >= from_decimals:
        return units * _POW10[to_decimals - from_decimals]
    return units // _POW10[from_decimals - to_decimals]
