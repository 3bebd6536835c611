"""24-hour rolling statistics of a symbol, as the ticker endpoint and streams publish them.

The window is the trades with time in ``(now − 24 h, now]``, read from the market (so REST
``ticker/24hr``, ``@ticker``, ``@miniTicker`` and ``!miniTicker@arr`` agree at the same instant).
Volumes and quote volumes are exact sums; ``firstId``/``lastId``/``count`` are trade ids, as on
Binance. A window without trades shows the last price, zero volume, ids −1 and count 0.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

from klinestore.core.intervals import DAY_MS, HOUR_MS
from klinestore.sim.fixed import fmt, rescale
from klinestore.sim.instruments import SymbolSpec
from klinestore.sim.market import Market

WINDOW_MS = DAY_MS


class Rolling(NamedTuple):
    """Integer units of the symbol (prices, quantities, quote) over one 24 h window."""

    open_time: int
    close_time: int
    open: int
    high: int
    low: int
    last: int
    last_qty: int
    volume: int
    quote: int
    first_id: int
    last_id: int
    count: int


class _Part(NamedTuple):
    """Trades of one slice of the window, in time order (first/last price, qty and trade ids)."""

    first: int
    first_id: int
    high: int
    low: int
    volume: int
    quote: int
    count: int
    last: int
    last_qty: int
    last_id: int


def _part(market: Market, symbol: str, after: int, upto: int) -> _Part | None:
    part = None
    for chunk, lo, hi in market.trades(symbol, after, upto):
        t = chunk.trades
        piece = _Part(
            int(t.price[lo]), int(t.first_tid[lo]), int(t.price[lo:hi].max()), int(t.price[lo:hi].min()),
            int(t.qty[lo:hi].sum()), int(t.quote[lo:hi].sum()), int((t.last_tid[lo:hi] - t.first_tid[lo:hi] + 1).sum()),
            int(t.price[hi - 1]), int(t.qty[hi - 1]), int(t.last_tid[hi - 1]),
        )
        part = piece if part is None else _join(part, piece)
    return part


def _join(a: _Part, b: _Part) -> _Part:
    return _Part(a.first, a.first_id, max(a.high, b.high), min(a.low, b.low), a.volume + b.volume,
                 a.quote + b.quote, a.count + b.count, b.last, b.last_qty, b.last_id)


class Tickers:
    """Rolling windows of a market. A window spans 25 hours of trades; the 23 whole hours inside
    it are folded once and kept (bounded), so a ticker reads only its two edge hours again."""

    def __init__(self, market: Market, cache_hours: int = 8192) -> None:
        self.market = market
        self._hours: OrderedDict[tuple[str, int, int], _Part | None] = OrderedDict()
        self._limit = cache_hours

    def _hour(self, symbol: str, hour: int) -> _Part | None:
        key = (symbol, hour, self.market.listings.version)
        if key in self._hours:
            self._hours.move_to_end(key)
            return self._hours[key]
        part = self._hours[key] = _part(self.market, symbol, hour - 1, hour + HOUR_MS - 1)
        if len(self._hours) > self._limit:
            self._hours.popitem(last=False)
        return part

    def rolling(self, symbol: str, now: int) -> Rolling:
        """The window ``(now − 24 h, now]`` (call only for a symbol with a market)."""
        start = now - WINDOW_MS
        first_full = start // HOUR_MS * HOUR_MS + HOUR_MS
        last_full = now // HOUR_MS * HOUR_MS  # the hour holding ``now`` is not whole yet
        parts = [_part(self.market, symbol, start, min(now, first_full - 1))]
        parts += [self._hour(symbol, h) for h in range(first_full, last_full, HOUR_MS)]
        parts.append(_part(self.market, symbol, max(start, last_full - 1), now))
        total = None
        for part in parts:
            if part is not None:
                total = part if total is None else _join(total, part)
        if total is None:
            price = self.market.price_at(symbol, now)
            return Rolling(start, now, price, price, price, price, 0, 0, 0, -1, -1, 0)
        return Rolling(start, now, total.first, total.high, total.low, total.last, total.last_qty, total.volume,
                       total.quote, total.first_id, total.last_id, total.count)


def _change_percent(r: Rolling) -> str:
    if r.open <= 0:
        return "0.000"
    units = (r.last - r.open) * 100_000
    return fmt(int(units / r.open + (0.5 if units >= 0 else -0.5)), 3)


def _weighted(r: Rolling, spec: SymbolSpec) -> str:
    if r.volume <= 0:
        return "0"
    numerator = rescale(r.quote, spec.quote_decimals, spec.price_decimals + spec.qty_decimals)
    return spec.price((2 * numerator + r.volume) // (2 * r.volume))


def rest_body(r: Rolling, spec: SymbolSpec) -> dict[str, Any]:
    """One object of ``GET /fapi/v1/ticker/24hr``."""
    p, q = spec.price, spec.qty
    return {
        "symbol": spec.symbol, "priceChange": p(r.last - r.open), "priceChangePercent": _change_percent(r),
        "weightedAvgPrice": _weighted(r, spec), "lastPrice": p(r.last), "lastQty": q(r.last_qty),
        "openPrice": p(r.open), "highPrice": p(r.high), "lowPrice": p(r.low), "volume": q(r.volume),
        "quoteVolume": spec.quote(r.quote), "openTime": r.open_time, "closeTime": r.close_time,
        "firstId": r.first_id, "lastId": r.last_id, "count": r.count,
    }


def mini_payload(event_ms: int, r: Rolling, spec: SymbolSpec) -> str:
    """The ``24hrMiniTicker`` event (a JSON object as text, to embed in ``!miniTicker@arr``)."""
    p = spec.price
    return (
        f'{{"e":"24hrMiniTicker","E":{event_ms},"s":"{spec.symbol}","c":"{p(r.last)}","o":"{p(r.open)}",'
        f'"h":"{p(r.high)}","l":"{p(r.low)}","v":"{spec.qty(r.volume)}","q":"{spec.quote(r.quote)}"}}'
    )


def ticker_payload(event_ms: int, r: Rolling, spec: SymbolSpec) -> str:
    """The ``24hrTicker`` event of ``<symbol>@ticker``."""
    p = spec.price
    return (
        f'{{"e":"24hrTicker","E":{event_ms},"s":"{spec.symbol}","p":"{p(r.last - r.open)}",'
        f'"P":"{_change_percent(r)}","w":"{_weighted(r, spec)}","c":"{p(r.last)}","Q":"{spec.qty(r.last_qty)}",'
        f'"o":"{p(r.open)}","h":"{p(r.high)}","l":"{p(r.low)}","v":"{spec.qty(r.volume)}",'
        f'"q":"{spec.quote(r.quote)}","O":{r.open_time},"C":{r.close_time},"F":{r.first_id},"L":{r.last_id},'
        f'"n":{r.count}}}'
    )
