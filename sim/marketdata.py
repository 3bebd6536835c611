"""Binance's futures market-data endpoints beyond klines and depth.

``fundingRate``, ``premiumIndex``, ``markPriceKlines``, ``indexPriceKlines``, ``aggTrades``,
``ticker/24hr``, ``ticker/price``, ``ticker/bookTicker`` and ``openInterest``, with Binance's
bodies, parameters and errors. They read the same market, books and :class:`Prices` as the
streams, so an answer equals what the streams showed at that instant. Weights are charged by
the caller (``klinestore.ingest.protocol.rest.path_weight``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from klinestore.core.intervals import HOUR_MS, check_interval
from klinestore.ingest.protocol.http import Request
from klinestore.ingest.protocol.rest import (
    AGG_TRADES_DEFAULT_LIMIT,
    AGG_TRADES_MAX_LIMIT,
    AGG_TRADES_PATH,
    BOOK_TICKER_PATH,
    FUNDING_DEFAULT_LIMIT,
    FUNDING_MAX_LIMIT,
    FUNDING_RATE_PATH,
    INDEX_KLINES_PATH,
    KLINES_DEFAULT_LIMIT,
    KLINES_MAX_LIMIT,
    MARK_KLINES_PATH,
    OPEN_INTEREST_PATH,
    PREMIUM_INDEX_PATH,
    TICKER_24HR_PATH,
    TICKER_PRICE_PATH,
    TICKER_PRICE_V2_PATH,
)
from klinestore.ingest.protocol.wire import premium_index
from klinestore.sim import params
from klinestore.sim.book import STEP_MS, Books
from klinestore.sim.fixed import fmt
from klinestore.sim.market import Market
from klinestore.sim.prices import Prices
from klinestore.sim.tickers import Tickers, rest_body

Body = dict[str, Any] | list[Any]


def agg_trades(market: Market, symbol: str, after: int, upto: int) -> Iterator[dict[str, Any]]:
    """``aggTrades`` objects with ``after < time <= upto``, oldest first."""
    spec = market.spec(symbol)
    for chunk, lo, hi in market.trades(symbol, after, upto):
        t = chunk.trades
        rows = zip(t.agg_id[lo:hi].tolist(), t.price[lo:hi].tolist(), t.qty[lo:hi].tolist(),
                   t.first_tid[lo:hi].tolist(), t.last_tid[lo:hi].tolist(), t.time[lo:hi].tolist(),
                   t.maker[lo:hi].tolist())
        for a, p, q, f, last, time, m in rows:
            yield {"a": a, "p": spec.price(p), "q": spec.qty(q), "f": f, "l": last, "T": time, "m": m}


class MarketData:
    """The endpoints, by path."""

    def __init__(self, market: Market, books: Books, prices: Prices, tickers: Tickers) -> None:
        self.market = market
        self.books = books
        self.prices = prices
        self.tickers = tickers
        self.routes: dict[str, Callable[[Request, int], Body]] = {
            FUNDING_RATE_PATH: self._funding_rate, PREMIUM_INDEX_PATH: self._premium_index,
            MARK_KLINES_PATH: self._mark_klines, INDEX_KLINES_PATH: self._index_klines,
            AGG_TRADES_PATH: self._agg_trades, TICKER_24HR_PATH: self._ticker_24hr,
            TICKER_PRICE_PATH: self._ticker_price, TICKER_PRICE_V2_PATH: self._ticker_price,
            BOOK_TICKER_PATH: self._book_ticker,
            OPEN_INTEREST_PATH: self._open_interest,
        }

    def _trading(self, now: int) -> list[str]:
        return [s for s in self.market.listings.visible(now) if self.market.trading(s, now)]

    def _one_or_all(self, request: Request, now: int, body: Callable[[str], dict[str, Any]]) -> Body:
        """Binance's rule for optional ``symbol``: one object, or a list of every symbol's."""
        symbol = params.optional_symbol(request, self.market, now)
        return body(symbol) if symbol is not None else [body(s) for s in self._trading(now)]

    # --- funding and mark price -----------------------------------------------------------

    def _funding_rate(self, request: Request, now: int) -> Body:
        symbol = params.optional_symbol(request, self.market, now)
        limit = params.limit(request, FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT)
        start, end = params.time_range(request)
        symbols = [symbol] if symbol is not None else self._trading(now)
        events = [e for s in symbols for e in self.prices.fundings(s, start or 0, now if end is None else end, now)]
        events.sort(key=lambda e: (e.time, e.symbol))
        events = events[:limit] if start is not None else events[-limit:]
        return [e.body() for e in events]

    def _premium_index(self, request: Request, now: int) -> Body:
        def body(symbol: str) -> dict[str, Any]:
            s = self.prices.state(symbol, now)
            return premium_index(symbol, fmt(s.mark, s.decimals), fmt(s.index, s.decimals), fmt(s.settle, s.decimals),
                                 fmt(s.rate, 8), s.next_funding, now)

        return self._one_or_all(request, now, body)

    def _mark_klines(self, request: Request, now: int) -> Body:
        return self._price_klines(request, now, "mark", "symbol")

    def _index_klines(self, request: Request, now: int) -> Body:
        return self._price_klines(request, now, "index", "pair")

    def _price_klines(self, request: Request, now: int, kind: str, name: str) -> Body:
        symbol = params.symbol(request, self.market, now, name=name)
        interval = params.checked(request, "interval", check_interval, -1120, "Invalid interval.")
        limit = params.limit(request, KLINES_DEFAULT_LIMIT, KLINES_MAX_LIMIT)
        start, end = params.time_range(request)
        first, last, head = params.bar_window(self.market, symbol, interval, start, end, limit, now)
        bars = self.prices.bars(symbol, kind, interval, first, last, now)
        bars = bars[:limit] if head else bars[-limit:]
        decimals = self.prices.decimals(symbol)
        return [bar.row(decimals) for bar in bars]

    def _open_interest(self, request: Request, now: int) -> Body:
        symbol = params.symbol(request, self.market, now, trading=True)
        oi = self.prices.open_interest(symbol, now)
        return {"openInterest": self.market.spec(symbol).qty(oi), "symbol": symbol, "time": now}

    # --- trades and tickers ----------------------------------------------------------------

    def _agg_trades(self, request: Request, now: int) -> Body:
        symbol = params.symbol(request, self.market, now)
        limit, from_id, start, end = params.agg_trades_query(request, AGG_TRADES_DEFAULT_LIMIT, AGG_TRADES_MAX_LIMIT)
        upto = now if end is None else min(end, now)
        out: list[dict[str, Any]] = []
        if from_id is not None:
            for row in agg_trades(self.market, symbol, self._hour_of(symbol, from_id, upto) - 1, upto):
                if row["a"] >= from_id:
                    out.append(row)
                    if len(out) == limit:
                        break
            return out
        if start is not None:
            for row in agg_trades(self.market, symbol, start - 1, upto):
                out.append(row)
                if len(out) == limit:
                    break
            return out
        span = self.market.span(symbol)
        hour = upto // HOUR_MS * HOUR_MS
        while span is not None and len(out) < limit and hour + HOUR_MS > span.first_ms:
            out[:0] = list(agg_trades(self.market, symbol, hour - 1, min(upto, hour + HOUR_MS - 1)))
            hour -= HOUR_MS
        return out[-limit:]

    def _hour_of(self, symbol: str, agg_id: int, upto: int) -> int:
        """The start of the first hour that may hold trade ``agg_id`` (ids rise with time)."""
        span = self.market.span(symbol)
        if span is None:
            return upto
        lo, hi = span.first_ms // HOUR_MS, upto // HOUR_MS
        while lo < hi:
            mid = (lo + hi) // 2
            ids = self.market.chunk(symbol, mid * HOUR_MS).trades.agg_id
            if len(ids) and int(ids[-1]) >= agg_id:
                hi = mid
            elif len(ids):
                lo = mid + 1
            else:  # an hour without trades (a replayed outage): decide by the next hour with some
                probe = mid + 1
                while probe < hi and not len(self.market.chunk(symbol, probe * HOUR_MS).trades.agg_id):
                    probe += 1
                later = self.market.chunk(symbol, probe * HOUR_MS).trades.agg_id
                if probe >= hi or (len(later) and int(later[0]) > agg_id):
                    hi = mid
                else:
                    lo = probe
        return max(lo * HOUR_MS, span.first_ms)

    def _ticker_24hr(self, request: Request, now: int) -> Body:
        return self._one_or_all(request, now, lambda s: rest_body(self.tickers.rolling(s, now), self.market.spec(s)))

    def _ticker_price(self, request: Request, now: int) -> Body:
        def body(symbol: str) -> dict[str, Any]:
            return {"symbol": symbol, "price": self.market.spec(symbol).price(self.market.price_at(symbol, now)),
                    "time": now}

        return self._one_or_all(request, now, body)

    def _book_ticker(self, request: Request, now: int) -> Body:
        k = now // STEP_MS

        def body(symbol: str) -> dict[str, Any]:
            book, spec = self.books.get(symbol), self.market.spec(symbol)
            bid, bid_qty, ask, ask_qty = book.top(k)
            return {
                "lastUpdateId": book.update_id(k), "symbol": symbol,
                "bidPrice": spec.price(bid * spec.tick_units), "bidQty": spec.qty(bid_qty),
                "askPrice": spec.price(ask * spec.tick_units), "askQty": spec.qty(ask_qty), "time": now,
            }

        return self._one_or_all(request, now, body)
