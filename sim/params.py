"""Query parameters of Binance's REST endpoints that read the simulated market (listed symbols,
a symbol's first bar); the rest are the protocol's (``klinestore.ingest.protocol.params``),
re-exported here so every endpoint reads its parameters from one module.
"""

from __future__ import annotations

from klinestore.core.symbols import check_symbol
from klinestore.ingest.protocol import params as _wire
from klinestore.ingest.protocol.http import Request
from klinestore.ingest.protocol.params import (
    ApiError,
    agg_trades_query,
    checked,
    integer,
    limit,
    mandatory,
    step,
    time_range,
)
from klinestore.sim.listings import TRADING
from klinestore.sim.market import Market

__all__ = ["ApiError", "agg_trades_query", "bar_window", "checked", "integer", "limit", "mandatory",
           "optional_symbol", "step", "symbol", "time_range"]


def symbol(request: Request, market: Market, now: int, *, trading: bool = False, name: str = "symbol") -> str:
    """A listed symbol (``trading``: one that trades now); -1121 otherwise."""
    value = checked(request, name, check_symbol, -1121, "Invalid symbol.")
    status = market.listings.status(value, now)
    if status is None or (trading and status != TRADING):
        raise ApiError(-1121, "Invalid symbol.")
    return value


def optional_symbol(request: Request, market: Market, now: int) -> str | None:
    return symbol(request, market, now) if request.param("symbol") else None


def bar_window(market: Market, symbol: str, interval: str, start: int | None, end: int | None, limit: int,
               now: int) -> tuple[int, int, bool]:
    """The protocol's window (:func:`klinestore.ingest.protocol.params.bar_window`) from the symbol's first trade."""
    span = market.span(symbol)
    return _wire.bar_window(interval, start, end, limit, now, None if span is None else span.first_ms)
