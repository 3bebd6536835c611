"""Stream names and the route each one is served on.

Binance names streams ``<lowercase symbol>@<kind>[_<interval>][@<speed>]``. An uppercase
name is acknowledged by the exchange and then delivers nothing, so we build lowercase names
only and refuse anything else when parsing.

Routes (BINANCE.md and Binance's routing notice of 2026-03-06): ``/public`` carries the
high-frequency streams (depth, bookTicker, raw trades), ``/market`` everything else (klines,
continuous klines, aggTrade, mark price, tickers). Since 2026-04-23 a connection on the
unrouted legacy URLs (``/ws``, ``/stream``) still receives ``/public`` streams and nothing of
``/market``. Where ``@trade`` lives is not in BINANCE.md: it is on ``/public`` as live
observations report and as ccxt 4.5 routes it.

The all-market streams (``!miniTicker@arr``, ``!markPrice@arr[@1s]``) have no symbol: their
``symbol`` is ``""``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from klinestore.core.errors import InvalidInterval, InvalidSymbol
from klinestore.core.intervals import check_interval
from klinestore.core.symbols import check_symbol
from klinestore.ingest.protocol.errors import ProtocolError


class Route(enum.StrEnum):
    MARKET = "market"
    PUBLIC = "public"


DEPTH_SPEEDS = ("100ms", "250ms", "500ms", "0ms")
CONTRACT_TYPES = ("perpetual", "current_quarter", "next_quarter")

_KIND_ROUTE = {
    "kline": Route.MARKET,
    "continuousKline": Route.MARKET,
    "aggTrade": Route.MARKET,
    "trade": Route.PUBLIC,
    "markPrice": Route.MARKET,
    "miniTicker": Route.MARKET,
    "ticker": Route.MARKET,
    "allMiniTicker": Route.MARKET,
    "allMarkPrice": Route.MARKET,
    "depth": Route.PUBLIC,
    "bookTicker": Route.PUBLIC,
}

#: The one stream of every symbol's mini ticker (pushed each second, changed symbols only).
ALL_MINI_TICKERS = "!miniTicker@arr"
#: Every symbol's mark price in one stream (3 s, or 1 s with ``@1s``).
ALL_MARK_PRICES = ("!markPrice@arr", "!markPrice@arr@1s")

_NAME = re.compile(
    r"(?P<symbol>[a-z0-9_]+)@(?:"
    r"kline_(?P<kline>\w+)"
    r"|continuousKline_(?P<ckline>\w+)"
    r"|(?P<agg>aggTrade)"
    r"|(?P<trade>trade)"
    r"|(?P<mark>markPrice)(?:@(?P<mark_speed>1s))?"
    r"|(?P<depth>depth)(?P<levels>5|10|20)?(?:@(?P<depth_speed>\d+ms))?"
    r"|(?P<book>bookTicker)"
    r"|(?P<mini>miniTicker)"
    r"|(?P<ticker>ticker)"
    r")"
)


@dataclass(frozen=True, slots=True)
class StreamName:
    """A parsed stream name. ``symbol`` is uppercase (for continuous klines: the pair)."""

    name: str
    kind: str
    symbol: str
    interval: str | None = None
    contract_type: str | None = None
    speed: str | None = None
    levels: int | None = None

    @property
    def route(self) -> Route:
        return _KIND_ROUTE[self.kind]


def kline_stream(symbol: str, interval: str) -> str:
    return f"{check_symbol(symbol).lower()}@kline_{check_interval(interval)}"


def continuous_kline_stream(pair: str, contract_type: str, interval: str) -> str:
    if contract_type.lower() not in CONTRACT_TYPES:
        raise ProtocolError(f"unknown contract type {contract_type!r}")
    return f"{check_symbol(pair).lower()}_{contract_type.lower()}@continuousKline_{check_interval(interval)}"


def agg_trade_stream(symbol: str) -> str:
    return f"{check_symbol(symbol).lower()}@aggTrade"


def depth_stream(symbol: str, speed: str | None = None) -> str:
    """Diff-depth stream; ``speed`` None is the default 250 ms stream."""
    if speed is None or speed == "250ms":
        return f"{check_symbol(symbol).lower()}@depth"
    if speed not in DEPTH_SPEEDS:
        raise ProtocolError(f"unknown depth speed {speed!r}; expected one of {', '.join(DEPTH_SPEEDS)}")
    return f"{check_symbol(symbol).lower()}@depth@{speed}"


def mark_price_stream(symbol: str, every_second: bool = True) -> str:
    return f"{check_symbol(symbol).lower()}@markPrice" + ("@1s" if every_second else "")


def trade_stream(symbol: str) -> str:
    return f"{check_symbol(symbol).lower()}@trade"


def ticker_stream(symbol: str, mini: bool = False) -> str:
    """The 24 h rolling ticker of one symbol (``@miniTicker``: prices and volumes only)."""
    return f"{check_symbol(symbol).lower()}@" + ("miniTicker" if mini else "ticker")


def parse_stream(name: str) -> StreamName:
    """Parse a stream name; raise :class:`ProtocolError` for anything Binance would not serve."""
    if name == ALL_MINI_TICKERS:
        return StreamName(name, "allMiniTicker", "")
    if name in ALL_MARK_PRICES:
        return StreamName(name, "allMarkPrice", "", speed="1s" if name.endswith("@1s") else "3s")
    match = _NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ProtocolError(f"invalid stream name {name!r}")
    g = match.groupdict()
    try:
        if g["kline"]:
            return StreamName(name, "kline", check_symbol(g["symbol"]), interval=check_interval(g["kline"]))
        if g["ckline"]:
            pair, _, contract = g["symbol"].partition("_")
            if contract not in CONTRACT_TYPES:
                raise ProtocolError(f"invalid stream name {name!r}: unknown contract type {contract!r}")
            return StreamName(
                name, "continuousKline", check_symbol(pair), interval=check_interval(g["ckline"]),
                contract_type=contract,
            )
        symbol = check_symbol(g["symbol"])
    except (InvalidSymbol, InvalidInterval) as exc:
        raise ProtocolError(f"invalid stream name {name!r}: {exc}") from None
    if g["agg"]:
        return StreamName(name, "aggTrade", symbol)
    if g["trade"]:
        return StreamName(name, "trade", symbol)
    if g["mark"]:
        return StreamName(name, "markPrice", symbol, speed=g["mark_speed"] or "3s")
    if g["depth"]:
        speed = g["depth_speed"] or "250ms"
        if speed not in DEPTH_SPEEDS:
            raise ProtocolError(f"invalid stream name {name!r}: unknown depth speed {speed!r}")
        levels = int(g["levels"]) if g["levels"] else None
        return StreamName(name, "depth", symbol, speed=speed, levels=levels)
    if g["mini"]:
        return StreamName(name, "miniTicker", symbol)
    if g["ticker"]:
        return StreamName(name, "ticker", symbol)
    return StreamName(name, "bookTicker", symbol)


def route_of(name: str) -> Route:
    """The route that serves stream ``name``."""
    return parse_stream(name).route
