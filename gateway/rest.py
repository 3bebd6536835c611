"""The gateway's REST side: Binance's market endpoints answered from the service's own data.

Every answer is the exchange's layout (``klinestore.ingest.protocol.wire``), every bad
parameter gets Binance's code and message (``klinestore.ingest.protocol.params``), and every
answer carries ``X-MBX-USED-WEIGHT-1M``: the client's use of its local budget
(:class:`WeightBudget`). The series endpoints (``markPriceKlines``, ``indexPriceKlines``,
``fundingRate``, ``aggTrades``) are plugged in by :meth:`GatewayRest.add_route`
(``gateway/series.py``, ``gateway/trades.py``); any other path gets Binance's answer for an
unknown path, 404 ``-5000``. Nothing here calls the exchange: exchangeInfo is the cached copy.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import msgspec

from klinestore.core.intervals import check_interval
from klinestore.core.symbols import check_symbol
from klinestore.gateway.budget import WeightBudget
from klinestore.gateway.exchangeinfo import ExchangeInfoCache
from klinestore.gateway.klines import Decimals, KlineRows, RowCache
from klinestore.ingest.klines import KlineSeries
from klinestore.ingest.protocol import params
from klinestore.ingest.protocol.http import Request, Response
from klinestore.ingest.protocol.params import ApiError, invalid_path
from klinestore.ingest.protocol.rest import (
    DEPTH_DEFAULT_LIMIT,
    DEPTH_LIMITS,
    DEPTH_PATH,
    EXCHANGE_INFO_PATH,
    KLINES_DEFAULT_LIMIT,
    KLINES_MAX_LIMIT,
    KLINES_PATH,
    PING_PATH,
    PREMIUM_INDEX_PATH,
    TIME_PATH,
    USED_WEIGHT_HEADER,
    path_weight,
)
from klinestore.ingest.protocol.wire import depth_snapshot, levels_json, premium_index
from klinestore.ingest.state import MarketState

CONTINUOUS_KLINES_PATH = "/fapi/v1/continuousKlines"
#: Binance's answer to a request without the right credentials.
UNAUTHORIZED = {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
_TOO_MUCH = ("Too much request weight used; current limit is {limit} request weight per 1 MINUTE "
             "(klinestore gateway, per client). Please use WebSocket Streams for live updates.")

Route = Callable[[Request, int], Any]
_encode = msgspec.json.Encoder().encode


class GatewayRest:
    """Routes a request to its endpoint after the token and the client's weight budget."""

    def __init__(self, state: MarketState, info: ExchangeInfoCache, rows: KlineRows, budget: WeightBudget, *,
                 now_ms: Callable[[], int], token: str = "") -> None:
        self.state = state
        self.info = info
        self.rows = rows
        self.budget = budget
        self._now = now_ms
        self._token = token
        self.routes: dict[str, Route] = {
            PING_PATH: lambda _, now: {}, TIME_PATH: lambda _, now: {"serverTime": now},
            EXCHANGE_INFO_PATH: self._exchange_info, KLINES_PATH: self._klines,
            CONTINUOUS_KLINES_PATH: self._continuous_klines, DEPTH_PATH: self._depth,
            PREMIUM_INDEX_PATH: self._premium_index,
        }
        self.encoded = RowCache()
        self.requests: dict[str, int] = {}
        self.unauthorized = 0

    def add_route(self, path: str, route: Route) -> None:
        """Serve ``path`` (``route(request, now_ms)`` returns the body or raises :class:`ApiError`)."""
        self.routes[path] = route

    async def handle(self, request: Request) -> Response:
        if self._token and not authorized(request.headers, self._token):
            self.unauthorized += 1
            return Response.json(401, UNAUTHORIZED)
        route = self.routes.get(request.path)
        if route is None or request.method != "GET":
            return Response.json(404 if route is None else 405, invalid_path(request.path, request.method))
        self.requests[request.path] = self.requests.get(request.path, 0) + 1
        client = request.headers.get("x-mbx-apikey") or request.peer
        query = {k: v[-1] for k, v in request.query.items()}
        charge = self.budget.charge(client, path_weight(request.path, query))
        headers = [(USED_WEIGHT_HEADER, str(charge.used))]
        if not charge.ok:
            headers.append(("Retry-After", str(charge.retry_after)))
            body = {"code": -1003, "msg": _TOO_MUCH.format(limit=self.budget.limit)}
            return Response.json(429, body, headers)
        try:
            body = route(request, self._now())
        except ApiError as exc:
            return Response.json(exc.status, exc.body(), headers)
        if isinstance(body, bytes):
            return Response(200, body, headers)
        return Response(200, _encode(body), headers)

    # --- endpoints ----------------------------------------------------------------------

    def _exchange_info(self, request: Request, now: int) -> bytes:
        if self.info.body is None:
            raise unavailable("exchangeInfo has not been fetched from the exchange yet")
        return self.info.body

    def _klines(self, request: Request, now: int) -> bytes:
        symbol = self.symbol_param(request, "symbol")
        return self._kline_rows(request, symbol, now)

    def _continuous_klines(self, request: Request, now: int) -> bytes:
        pair = self.symbol_param(request, "pair")
        contract = params.checked(request, "contractType", _contract, -1121, "Invalid contractType.")
        if contract != "PERPETUAL":
            raise ApiError(-1121, f"klinestore gateway keeps perpetual contracts only, not {contract}.")
        return self._kline_rows(request, pair, now)

    def _kline_rows(self, request: Request, symbol: str, now: int) -> bytes:
        interval = params.checked(request, "interval", check_interval, -1120, "Invalid interval.")
        limit = params.limit(request, KLINES_DEFAULT_LIMIT, KLINES_MAX_LIMIT)
        start, end = params.time_range(request)
        series = self._series(symbol, interval)
        d = self.decimals(symbol)
        closed, open_bar = self.rows.rows(series, start, end, limit, now)
        return self.encoded.body(closed, d, open_bar)

    def _depth(self, request: Request, now: int) -> bytes:
        symbol = self.symbol_param(request, "symbol")
        limit = params.integer(request, "limit")
        limit = DEPTH_DEFAULT_LIMIT if limit is None else limit
        if limit not in DEPTH_LIMITS:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        book = self.state.books.get(symbol)
        if book is None:
            raise not_ingested(f"the depth of {symbol}")
        # a short side (the price walked toward the snapshot's edge, a refresh is due) still knows its
        # best levels exactly: served when it knows at least ``limit`` of them, never a hole
        short = book.bids.short or book.asks.short
        if not book.synced or short and min(book.bids.known, book.asks.known) < limit:
            raise unavailable(f"the local book of {symbol} is resyncing")
        bids, asks = book.depth(limit)
        d = self.decimals(symbol)

        def side(levels: list[tuple[float, float]]) -> str:
            return levels_json((f"{p:.{d.price}f}", f"{q:.{d.qty}f}") for p, q in levels)

        return depth_snapshot(book.last_update_id, book.event_time, side(bids), side(asks))

    def _premium_index(self, request: Request, now: int) -> Any:
        if request.param("symbol"):
            symbol = self.symbol_param(request, "symbol")
            if self.state.marks.get(symbol) is None:
                raise not_ingested(f"the mark price of {symbol}")
            return self._premium(symbol, now)
        return [self._premium(s, now) for s in self.state.marks.symbols()]

    def _premium(self, symbol: str, now: int) -> dict[str, Any]:
        mark = self.state.marks.get(symbol)
        assert mark is not None
        price = f"{mark.mark_price:.8f}"
        index = price if mark.index_price is None else f"{mark.index_price:.8f}"
        settle = index if mark.settle_price is None else f"{mark.settle_price:.8f}"
        rate = "" if mark.funding_rate is None else f"{mark.funding_rate:.8f}"
        return premium_index(symbol, price, index, settle, rate, mark.next_funding_ms, now)

    # --- parameters --------------------------------------------------------------------

    def symbol_param(self, request: Request, name: str) -> str:
        """A symbol the exchange lists (-1121 otherwise), as Binance checks it."""
        symbol = params.checked(request, name, check_symbol, -1121, "Invalid symbol.")
        if self.info.body is not None and not self.info.listed(symbol):
            raise ApiError(-1121, "Invalid symbol.")
        return symbol

    def _series(self, symbol: str, interval: str) -> KlineSeries:
        series = self.state.klines.get((symbol, interval))
        if series is None:
            kept = sorted({iv for s, iv in self.state.klines if s == symbol})
            what = f"{symbol} {interval} klines" + (f" (it keeps {', '.join(kept)})" if kept else "")
            raise not_ingested(what)
        return series

    def decimals(self, symbol: str) -> Decimals:
        d = self.info.decimals.get(symbol)
        if d is None:
            raise unavailable(f"exchangeInfo has no precision for {symbol} yet")
        return d


def _contract(raw: str) -> str:
    return raw.upper()


def authorized(headers: dict[str, str], token: str) -> bool:
    """``Authorization: Bearer <token>`` (compared in constant time)."""
    scheme, _, given = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def not_ingested(what: str) -> ApiError:
    """The gateway serves what the service ingests; anything else is refused in one line naming it."""
    return ApiError(-1121, f"klinestore gateway does not ingest {what}.")


def unavailable(why: str) -> ApiError:
    return ApiError(-1000, f"klinestore gateway: {why}; try again shortly.", status=503)
