"""Binance's REST market endpoints: klines, depth, exchangeInfo, time, ping, and the rest of
the market data (``marketdata.py``).

Every request to a Binance path is counted in the ledger (whatever its answer) and charged
its documented weight (``klinestore.ingest.protocol.rest``); every answer carries
``X-MBX-USED-WEIGHT-1M``. Errors are Binance's bodies (``{"code": -1121, "msg": "Invalid
symbol."}``) with HTTP 400.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klinestore.core.intervals import check_interval, next_open
from klinestore.ingest.protocol.rest import (
    DEPTH_DEFAULT_LIMIT,
    DEPTH_LIMITS,
    DEPTH_PATH,
    EXCHANGE_INFO_PATH,
    KLINES_DEFAULT_LIMIT,
    KLINES_MAX_LIMIT,
    KLINES_PATH,
    PING_PATH,
    TIME_PATH,
    USED_WEIGHT_HEADER,
    path_weight,
)
from klinestore.sim import params
from klinestore.sim.bars import Bar, rest_row
from klinestore.sim.book import STEP_MS, Books
from klinestore.sim.clock import ExchangeClock
from klinestore.sim.encode import depth_snapshot
from klinestore.sim.exchangeinfo import exchange_info
from klinestore.sim.faults import FaultState, mismatched
from klinestore.ingest.protocol.http import Request, Response
from klinestore.ingest.protocol.params import invalid_path
from klinestore.sim.limits import WeightLimiter
from klinestore.sim.market import Market
from klinestore.sim.marketdata import MarketData
from klinestore.sim.params import ApiError
from klinestore.sim.prices import Prices
from klinestore.sim.tickers import Tickers

_TOO_MUCH = "Too much request weight used; current limit is {limit} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
_BANNED = "Way too much request weight used; IP banned until {until}. Please use WebSocket Streams for live updates to avoid bans."
_FAULT_BODIES: dict[int, tuple[int, str]] = {
    408: (-1007, "Timeout waiting for response from backend server. Send status unknown; execution status unknown."),
    429: (-1003, "Too many requests (simulated rest_error)."),
    418: (-1003, "IP banned (simulated rest_error)."),
}


class BinanceRest:
    """The REST endpoints of one simulated exchange."""

    def __init__(
        self, market: Market, books: Books, clock: ExchangeClock, faults: FaultState, limiter: WeightLimiter,
        prices: Prices, tickers: Tickers,
    ) -> None:
        self.market = market
        self.books = books
        self.clock = clock
        self.faults = faults
        self.limiter = limiter
        self._routes: dict[str, Callable[[Request, int], Any]] = {
            KLINES_PATH: self._klines, DEPTH_PATH: self._depth,
            EXCHANGE_INFO_PATH: lambda _, now: exchange_info(self.market, now, self.limiter.limit),
            TIME_PATH: lambda _, now: {"serverTime": now}, PING_PATH: lambda _, now: {},
            **MarketData(market, books, prices, tickers).routes,
        }
        self.ledger: dict[str, int] = dict.fromkeys(self._routes, 0)

    async def handle(self, request: Request) -> Response:
        route = self._routes.get(request.path)
        if route is None or request.method != "GET":
            body = invalid_path(request.path, request.method)
            return Response.json(404 if route is None else 405, body, self._weight_header(self.limiter.used()))
        self.ledger[request.path] += 1
        fault = self.faults.take_rest_error()
        if fault is not None:
            code, msg = _FAULT_BODIES.get(fault, (-1000, "An unknown error occurred while processing the request."))
            headers = self._weight_header(self.limiter.used())
            if fault in (418, 429):
                headers.append(("Retry-After", "1"))
            return Response.json(fault, {"code": code, "msg": msg}, headers)
        params = {k: v[-1] for k, v in request.query.items()}
        decision = self.limiter.admit(path_weight(request.path, params))
        headers = self._weight_header(decision.used)
        if decision.status != 200:
            headers.append(("Retry-After", str(decision.retry_after)))
            if decision.status == 418:
                msg = _BANNED.format(until=decision.banned_until)
            else:
                msg = _TOO_MUCH.format(limit=self.limiter.limit)
            return Response.json(decision.status, {"code": -1003, "msg": msg}, headers)
        try:
            body = route(request, self.clock.now_ms())
        except ApiError as exc:
            return Response.json(exc.status, {"code": exc.code, "msg": exc.msg}, headers)
        if isinstance(body, bytes):  # already encoded (depth snapshots keep their decimals)
            return Response(200, body, headers)
        return Response.json(200, body, headers)

    @staticmethod
    def _weight_header(used: int) -> list[tuple[str, str]]:
        return [(USED_WEIGHT_HEADER, str(used))]

    # --- endpoints ----------------------------------------------------------------------

    def _klines(self, request: Request, now: int) -> list[list[int | str]]:
        symbol = params.symbol(request, self.market, now)
        interval = params.checked(request, "interval", check_interval, -1120, "Invalid interval.")
        limit = params.limit(request, KLINES_DEFAULT_LIMIT, KLINES_MAX_LIMIT)
        start, end = params.time_range(request)
        first, last, head = params.bar_window(self.market, symbol, interval, start, end, limit, now)
        bars = self.market.bars(symbol, interval, first, last, now)
        bars = bars[:limit] if head else bars[-limit:]
        bars = self._maybe_mismatch(symbol, interval, bars, now)
        spec = self.market.spec(symbol)
        return [rest_row(bar, spec) for bar in bars]

    def _maybe_mismatch(self, symbol: str, interval: str, bars: list[Bar], now: int) -> list[Bar]:
        """Apply a pending ``kline_mismatch``: the exchange's REST record of one closed bar changes."""
        closed = [i for i, b in enumerate(bars) if next_open(b.open_time, interval) <= now]
        if not closed or not any(f.symbol == symbol for f in self.faults.mismatches):
            return bars
        fault = self.faults.take_mismatch(symbol, interval)
        if fault is None:
            return bars
        targets = [i for i in closed if fault.open_time in (None, bars[i].open_time)]
        if not targets:
            self.faults.mismatches.append(fault)
            return bars
        i = targets[-1]
        altered = mismatched(bars[i], self.market.spec(symbol))
        self.market.corrections[(symbol, interval, altered.open_time)] = altered
        self.faults.applied["kline_mismatch"] += 1
        return [*bars[:i], altered, *bars[i + 1 :]]

    def _depth(self, request: Request, now: int) -> bytes:
        symbol = params.symbol(request, self.market, now, trading=True)
        limit = params.integer(request, "limit")
        limit = DEPTH_DEFAULT_LIMIT if limit is None else limit
        if limit not in DEPTH_LIMITS:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        snap = self.books.get(symbol).snapshot(now // STEP_MS, limit)
        return depth_snapshot(now, self.market.spec(symbol), snap)
