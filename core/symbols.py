"""Symbol validation: every symbol that enters klinestore passes here first.

Symbols become parts of stream names, URLs and (through Hive partitions and file names)
paths, so anything but Binance's alphabet is refused rather than escaped.
"""

from __future__ import annotations

import re

from klinestore.core.errors import InvalidSymbol

# Perpetuals (BTCUSDT, 1000PEPEUSDT), delivery contracts (BTCUSDT_250926), spot pairs.
_SYMBOL = re.compile(r"[A-Z0-9]{2,32}(?:_[A-Z0-9]{1,16})?")


def check_symbol(symbol: object) -> str:
    """Return the canonical (uppercase) symbol or raise :class:`InvalidSymbol`."""
    if not isinstance(symbol, str):
        raise InvalidSymbol(f"symbol must be a string, got {type(symbol).__name__}")
    canonical = symbol.strip().upper()
    if not _SYMBOL.fullmatch(canonical):
        raise InvalidSymbol(
            f"invalid symbol {symbol!r}: expected 2-32 letters or digits, optionally _ and a suffix"
        )
    return canonical


def check_symbols(symbols: object) -> tuple[str, ...]:
    """Validate a comma-separated string or an iterable of symbols; dedupe, keep order."""
    items = symbols.split(",") if isinstance(symbols, str) else symbols
    if not hasattr(items, "__iter__"):
        raise InvalidSymbol(f"symbols must be a list or a comma-separated string, got {symbols!r}")
    seen: dict[str, None] = {}
    for item in items:  # type: ignore[union-attr]
        if isinstance(item, str) and not item.strip():
            continue
        seen[check_symbol(item)] = None
    return tuple(seen)
