"""24-hour rolling statistics of a symbol, as the ticker endpoint and streams publish them.

The window is the trades with time in ``(now − 24 h, now]``, read from the market (so REST
``ticker/24hr``, ``@ticker``, ``@miniTicker`` and ``!miniTicker@arr`` agree at the same instant).
Volumes and quote volumes are exact sums; ``firstId``/``lastId``/``count`` are trade ids, as on
Binance. A window without trades shows the last price, zero volume, ids −1 and count 0.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from klinestore.core.intervals import DAY_MS
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


def rolling(market: Market, symbol: str, now: int) -> Rolling:
    """The 24 h window ending at ``now`` (call only for a symbol with a market)."""
    first = last = high = low = last_qty = -1
    volume = quote = count = 0
    first_id = last_id = -1
    for chunk, lo, hi in market.trades(symbol, now - WINDOW_MS, now):
        t = chunk.trades
        if first < 0:
            first, first_id = int(t.price[lo]), int(t.first_tid[lo])
        top, bottom = int(t.price[lo:hi].max()), int(t.price[lo:hi].min())
        high = top if high < 0 else max(high, top)
        low = bottom if low < 0 else min(low, bottom)
        volume += int(t.qty[lo:hi].sum())
        quote += int(t.quote[lo:hi].sum())
        count += int((t.last_tid[lo:hi] - t.first_tid[lo:hi] + 1).sum())
        last, last_qty, last_id = int(t.price[hi - 1]), int(t.qty[hi - 1]), int(t.last_tid[hi - 1])
    if first < 0:
        price = market.price_at(symbol, now)
        first = last = high = low = price
        last_qty = 0
    return Rolling(now - WINDOW_MS, now, first, high, low, last, last_qty, volume, quote, first_id, last_id, count)


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
