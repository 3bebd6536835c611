"""When each symbol trades: listing and delisting on the exchange clock.

A symbol is visible in exchangeInfo from its listing (status TRADING) and stays visible
after its delisting (status SETTLING, no more trades), as delisted perpetuals do on Binance.
Times are floored to the minute so a new listing's first bar is a whole minute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from klinestore.core.intervals import MINUTE_MS
from klinestore.sim.config import ListingEvent
from klinestore.sim.errors import ListingError

TRADING = "TRADING"
SETTLING = "SETTLING"


@dataclass(frozen=True, slots=True)
class Window:
    """``[onboard_ms, delist_ms)``: when a symbol trades (``delist_ms`` None: no end)."""

    onboard_ms: int
    delist_ms: int | None = None

    def trading(self, t: int) -> bool:
        return self.onboard_ms <= t and (self.delist_ms is None or t < self.delist_ms)


class Listings:
    """The listing schedule: symbols and their trading windows (mutable at run time)."""

    def __init__(self, initial: Mapping[str, int], schedule: Iterable[ListingEvent] = ()) -> None:
        self._windows: dict[str, Window] = {s: Window(_floor(t)) for s, t in initial.items()}
        self.version = 0  # bumped on every change, so readers may cache what they derive
        for event in sorted(schedule, key=lambda e: (e.action != "list", e.at_ms)):
            if event.action == "list":
                self.list(event.symbol, event.at_ms)
            else:
                self.delist(event.symbol, event.at_ms)

    def list(self, symbol: str, at_ms: int) -> Window:
        if symbol in self._windows:
            raise ListingError(f"{symbol} is already listed")
        window = self._windows[symbol] = Window(_floor(at_ms))
        self.version += 1
        return window

    def delist(self, symbol: str, at_ms: int) -> Window:
        window = self._windows.get(symbol)
        if window is None:
            raise ListingError(f"{symbol} is not listed, so it cannot be delisted")
        if window.delist_ms is not None:
            raise ListingError(f"{symbol} is already delisted")
        at = _floor(at_ms)
        if at <= window.onboard_ms:
            raise ListingError(f"{symbol} cannot be delisted before or at its listing")
        window = self._windows[symbol] = Window(window.onboard_ms, at)
        self.version += 1
        return window

    def window(self, symbol: str) -> Window | None:
        return self._windows.get(symbol)

    def status(self, symbol: str, t: int) -> str | None:
        """TRADING, SETTLING (delisted), or None while it is not listed yet (or unknown)."""
        window = self._windows.get(symbol)
        if window is None or t < window.onboard_ms:
            return None
        return TRADING if window.trading(t) else SETTLING

    def visible(self, t: int) -> list[str]:
        """Symbols in exchangeInfo at ``t``, in listing order."""
        return [s for s, w in sorted(self._windows.items(), key=lambda kv: (kv[1].onboard_ms, kv[0])) if w.onboard_ms <= t]

    def symbols(self) -> list[str]:
        return list(self._windows)


def _floor(t: int) -> int:
    return t // MINUTE_MS * MINUTE_MS
