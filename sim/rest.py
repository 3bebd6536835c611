"""Binance's REST market endpoints: klines, depth, exchangeInfo, time, ping.

Every request to a Binance path is counted in the ledger (whatever its answer) and charged
its documented weight (``klinestore.ingest.protocol.rest``); every answer carries
``X-MBX-USED-WEIGHT-1M``. Errors are Binance's bodies (``{"code": -1121, "msg": "Invalid
symbol."}``) with HTTP 400.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from klinestore.core.errors import InvalidInterval, InvalidSymbol
from klinestore.core.intervals import bar_open, check_interval, interval_ms, next_open
from klinestore.core.symbols import check_symbol
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
from klinestore.sim.bars import Bar, rest_row
from klinestore.sim.book import STEP_MS, Books
from klinestore.sim.clock import ExchangeClock
from klinestore.sim.encode import depth_snapshot
from klinestore.sim.faults import FaultState, mismatched
from klinestore.sim.http import Request, Response
from klinestore.sim.instruments import PERPETUAL_DELIVERY_MS
from klinestore.sim.limits import WeightLimiter
from klinestore.sim.listings import TRADING
from klinestore.sim.market import Market

REST_PATHS = (KLINES_PATH, DEPTH_PATH, EXCHANGE_INFO_PATH, TIME_PATH, PING_PATH)
_TOO_MUCH = "Too much request weight used; current limit is {limit} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
_BANNED = "Way too much request weight used; IP banned until {until}. Please use WebSocket Streams for live updates to avoid bans."
_FAULT_BODIES: dict[int, tuple[int, str]] = {
    408: (-1007, "Timeout waiting for response from backend server. Send status unknown; execution status unknown."),
    429: (-1003, "Too many requests (simulated rest_error)."),
    418: (-1003, "IP banned (simulated rest_error)."),
}


class ApiError(Exception):
    """A Binance error answer: HTTP ``status`` with ``{"code": code, "msg": msg}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        self.code, self.msg, self.status = code, msg, status
        super().__init__(msg)


def _mandatory(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


class BinanceRest:
    """The REST endpoints of one simulated exchange."""

    def __init__(
        self, market: Market, books: Books, clock: ExchangeClock, faults: FaultState, limiter: WeightLimiter,
    ) -> None:
        self.market = market
        self.books = books
        self.clock = clock
        self.faults = faults
        self.limiter = limiter
        self.ledger: dict[str, int] = dict.fromkeys(REST_PATHS, 0)
        self._routes: dict[str, Callable[[Request, int], Any]] = {
            KLINES_PATH: self._klines, DEPTH_PATH: self._depth, EXCHANGE_INFO_PATH: self._exchange_info,
            TIME_PATH: lambda _, now: {"serverTime": now}, PING_PATH: lambda _, now: {},
        }

    async def handle(self, request: Request) -> Response:
        route = self._routes.get(request.path)
        if route is None or request.method != "GET":
            body = {"code": -5000, "msg": f"Path {request.path}, Method {request.method} is invalid"}
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

    # --- parameters ---------------------------------------------------------------------

    @staticmethod
    def _checked(request: Request, name: str, check: Callable[[str], str], code: int, msg: str) -> str:
        """A mandatory parameter through ``check``; Binance's error body if missing or invalid."""
        raw = request.param(name)
        if not raw:
            raise _mandatory(name)
        try:
            return check(raw)
        except (InvalidSymbol, InvalidInterval):
            raise ApiError(code, msg) from None

    def _symbol(self, request: Request, now: int, *, trading: bool = False) -> str:
        symbol = self._checked(request, "symbol", check_symbol, -1121, "Invalid symbol.")
        status = self.market.listings.status(symbol, now)
        if status is None or (trading and status != TRADING):
            raise ApiError(-1121, "Invalid symbol.")
        return symbol

    @staticmethod
    def _int(request: Request, name: str) -> int | None:
        raw = request.param(name)
        if raw is None or raw == "":
            return None
        if not raw.isdigit() or len(raw) > 20:
            raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
        return int(raw)

    # --- endpoints ----------------------------------------------------------------------

    def _klines(self, request: Request, now: int) -> list[list[int | str]]:
        symbol = self._symbol(request, now)
        interval = self._checked(request, "interval", check_interval, -1120, "Invalid interval.")
        limit = self._int(request, "limit")
        limit = KLINES_DEFAULT_LIMIT if limit is None else limit
        if not 1 <= limit <= KLINES_MAX_LIMIT:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = self._int(request, "startTime"), self._int(request, "endTime")
        if start is not None and end is not None and start > end:
            raise ApiError(-1023, "Start time is greater than end time.")
        bars = self._select(symbol, interval, start, end, limit, now)
        bars = self._maybe_mismatch(symbol, interval, bars, now)
        spec = self.market.spec(symbol)
        return [rest_row(bar, spec) for bar in bars]

    def _select(self, symbol: str, interval: str, start: int | None, end: int | None, limit: int, now: int) -> list[Bar]:
        """Binance's choice: from ``startTime`` the first ``limit`` bars, else the last ``limit`` up to
        ``endTime`` (or now); bars open at or after ``startTime`` and at or before ``endTime``."""
        if start is not None:
            first = bar_open(start, interval)
            first = first if first >= start else next_open(first, interval)
            span = self.market.span(symbol)
            if span is not None:
                first = max(first, bar_open(span.first_ms, interval))
            last = _step(first, interval, limit - 1)
            if end is not None:
                last = min(last, end)
            return self.market.bars(symbol, interval, start, last, now)[:limit]
        last = bar_open(min(now, end) if end is not None else now, interval)
        return self.market.bars(symbol, interval, _step(last, interval, -(limit - 1)), last, now)[-limit:]

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
        symbol = self._symbol(request, now, trading=True)
        limit = self._int(request, "limit")
        limit = DEPTH_DEFAULT_LIMIT if limit is None else limit
        if limit not in DEPTH_LIMITS:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        snap = self.books.get(symbol).snapshot(now // STEP_MS, limit)
        return depth_snapshot(now, self.market.spec(symbol), snap)

    def _exchange_info(self, request: Request, now: int) -> dict[str, Any]:
        symbols = []
        for symbol in self.market.listings.visible(now):
            spec = self.market.spec(symbol)
            window = self.market.listings.window(symbol)
            assert window is not None
            symbols.append({
                "symbol": symbol, "pair": symbol, "contractType": "PERPETUAL",
                "deliveryDate": PERPETUAL_DELIVERY_MS, "onboardDate": window.onboard_ms,
                "status": self.market.listings.status(symbol, now),
                "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
                "baseAsset": spec.base_asset, "quoteAsset": spec.quote_asset, "marginAsset": spec.quote_asset,
                "pricePrecision": spec.price_decimals, "quantityPrecision": spec.qty_decimals,
                "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
                "settlePlan": 0, "triggerProtect": "0.0500",
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": spec.tick_size, "minPrice": spec.tick_size,
                     "maxPrice": spec.price(spec.tick_units * 10**9)},
                    {"filterType": "LOT_SIZE", "stepSize": spec.step_size, "minQty": spec.step_size,
                     "maxQty": spec.qty(spec.step_units * 10**9)},
                    {"filterType": "MARKET_LOT_SIZE", "stepSize": spec.step_size, "minQty": spec.step_size,
                     "maxQty": spec.qty(spec.step_units * 10**8)},
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            })
        return {
            "timezone": "UTC",
            "serverTime": now,
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.limiter.limit},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [],
            "symbols": symbols,
        }


def _step(open_ms: int, interval: str, n: int) -> int:
    """The open time ``n`` bars after (or before, n < 0) ``open_ms``."""
    if interval != "1M":
        return open_ms + n * interval_ms(interval)
    dt = datetime.fromtimestamp(open_ms / 1000, tz=timezone.utc)
    months = dt.year * 12 + dt.month - 1 + n
    return calendar.timegm((months // 12, months % 12 + 1, 1, 0, 0, 0)) * 1000
