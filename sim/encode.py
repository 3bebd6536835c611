"""Binance's payloads, encoded here from the simulator's own state (never via the client's code).

The layouts a server shares with the gateway (envelope, replies, depth body) are
``klinestore.ingest.protocol.wire``'s, re-exported here.

Field order and types follow BINANCE.md: decimals are strings with the symbol's fixed
decimals, ids and times are integers. Symbols are ``[A-Z0-9_]`` (checked on entry), so the
JSON needs no escaping and plain string building is both exact and fast.
"""

from __future__ import annotations

from klinestore.ingest.protocol.wire import combined, depth_snapshot as _depth_body, error_reply, levels_json, reply
from klinestore.sim.bars import Bar
from klinestore.sim.book import Diff, Levels, Snapshot
from klinestore.sim.fixed import fmt, fmt_cached
from klinestore.sim.instruments import SymbolSpec
from klinestore.sim.prices import MarkState


def _k(bar: Bar, spec: SymbolSpec, interval: str, closed: bool, with_symbol: bool) -> str:
    pd, qd, f = spec.price_decimals, spec.qty_decimals, fmt_cached

    def p(units: int) -> str:
        return f(units, pd)

    def q(units: int) -> str:
        return f(units, qd)

    qq = spec.quote
    symbol = f'"s":"{spec.symbol}",' if with_symbol else ""
    return (
        f'{{"t":{bar.open_time},"T":{bar.close_time},{symbol}"i":"{interval}","f":{bar.first_id},"L":{bar.last_id},'
        f'"o":"{p(bar.open)}","c":"{p(bar.close)}","h":"{p(bar.high)}","l":"{p(bar.low)}","v":"{q(bar.volume)}",'
        f'"n":{bar.trades},"x":{"true" if closed else "false"},"q":"{qq(bar.quote)}","V":"{q(bar.taker_volume)}",'
        f'"Q":"{qq(bar.taker_quote)}","B":"0"}}'
    )


def kline(event_ms: int, bar: Bar, spec: SymbolSpec, interval: str, closed: bool) -> bytes:
    return f'{{"e":"kline","E":{event_ms},"s":"{spec.symbol}","k":{_k(bar, spec, interval, closed, True)}}}'.encode()


def continuous_kline(event_ms: int, bar: Bar, spec: SymbolSpec, interval: str, closed: bool, contract: str) -> bytes:
    return (
        f'{{"e":"continuous_kline","E":{event_ms},"ps":"{spec.symbol}","ct":"{contract}",'
        f'"k":{_k(bar, spec, interval, closed, False)}}}'
    ).encode()


def agg_trade(spec: SymbolSpec, agg_id: int, price: int, qty: int, first: int, last: int, t: int, maker: bool) -> bytes:
    q = spec.qty(qty)
    return (
        f'{{"e":"aggTrade","E":{t},"s":"{spec.symbol}","a":{agg_id},"p":"{spec.price(price)}","q":"{q}",'
        f'"nq":"{q}","f":{first},"l":{last},"T":{t},"m":{"true" if maker else "false"}}}'
    ).encode()


__all__ = ["agg_trade", "book_ticker", "combined", "continuous_kline", "depth_snapshot", "depth_update",
           "error_reply", "kline", "mark_price", "reply", "trade"]


def _levels(levels: Levels, spec: SymbolSpec) -> str:
    tick, pd, qd, f = spec.tick_units, spec.price_decimals, spec.qty_decimals, fmt_cached
    return levels_json([(f(t * tick, pd), f(n, qd)) for t, n in zip(levels.ticks.tolist(), levels.qty.tolist())])


def depth_update(event_ms: int, spec: SymbolSpec, diff: Diff) -> bytes:
    return (
        f'{{"e":"depthUpdate","E":{event_ms},"T":{event_ms},"s":"{spec.symbol}","U":{diff.first_update_id},'
        f'"u":{diff.final_update_id},"pu":{diff.prev_final_update_id},"b":[{_levels(diff.bids, spec)}],'
        f'"a":[{_levels(diff.asks, spec)}]}}'
    ).encode()


def depth_snapshot(event_ms: int, spec: SymbolSpec, snap: Snapshot) -> bytes:
    return _depth_body(snap.last_update_id, event_ms, _levels(snap.bids, spec), _levels(snap.asks, spec))


def book_ticker(event_ms: int, spec: SymbolSpec, update_id: int, top: tuple[int, int, int, int]) -> bytes:
    bid, bid_qty, ask, ask_qty = top
    tick, p, q = spec.tick_units, spec.price, spec.qty
    return (
        f'{{"e":"bookTicker","u":{update_id},"E":{event_ms},"T":{event_ms},"s":"{spec.symbol}",'
        f'"b":"{p(bid * tick)}","B":"{q(bid_qty)}","a":"{p(ask * tick)}","A":"{q(ask_qty)}"}}'
    ).encode()


def mark_price(symbol: str, state: MarkState) -> bytes:
    """Prices in the state's decimals (at least 8, as Binance prints them), the rate in 1e-8."""
    m, p = state.decimals, fmt(state.mark, state.decimals)
    return (
        f'{{"e":"markPriceUpdate","E":{state.time},"s":"{symbol}","p":"{p}","ap":"{p}",'
        f'"i":"{fmt(state.index, m)}","P":"{fmt(state.settle, m)}","r":"{fmt(state.rate, 8)}","T":{state.next_funding}}}'
    ).encode()


def trade(spec: SymbolSpec, trade_id: int, price: int, qty: int, t: int, maker: bool) -> bytes:
    """``<symbol>@trade``: one fill (recorded layout: ``e,E,T,s,t,p,q,X,m``)."""
    return (
        f'{{"e":"trade","E":{t},"T":{t},"s":"{spec.symbol}","t":{trade_id},"p":"{spec.price(price)}",'
        f'"q":"{spec.qty(qty)}","X":"MARKET","m":{"true" if maker else "false"}}}'
    ).encode()
