"""Latest mark price and funding rate per symbol (``<symbol>@markPrice@1s``)."""

from __future__ import annotations

from dataclasses import dataclass

from klinestore.ingest.protocol.events import MarkPriceEvent


@dataclass(frozen=True, slots=True)
class Mark:
    symbol: str
    event_ms: int
    mark_price: float
    index_price: float | None
    funding_rate: float | None
    next_funding_ms: int
    settle_price: float | None = None


class MarkPrices:
    """The newest ``markPriceUpdate`` per symbol; an older event never replaces a newer one."""

    __slots__ = ("_latest", "stale")

    def __init__(self) -> None:
        self._latest: dict[str, MarkPriceEvent] = {}
        self.stale = 0

    def update(self, ev: MarkPriceEvent) -> None:
        prev = self._latest.get(ev.s)
        if prev is not None and ev.E < prev.E:
            self.stale += 1
            return
        self._latest[ev.s] = ev

    def get(self, symbol: str) -> Mark | None:
        ev = self._latest.get(symbol)
        if ev is None:
            return None
        return Mark(ev.s, ev.E, ev.p, ev.i, ev.funding_rate, ev.T, ev.P)

    def remove(self, symbol: str) -> None:
        self._latest.pop(symbol, None)

    def symbols(self) -> list[str]:
        return sorted(self._latest)
