"""The live market state: kline series, trade windows, order books and mark prices.

Pure data, no I/O: the dispatcher writes into it, readers take Polars frames out of it.
What "ready" means is decided per kline series (``klinestore.ingest.klines``); a series that is not
ready is ``warming_up`` and its frame is empty, never wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import polars as pl

from klinestore.core.intervals import interval_sort_key
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.config import CacheConfig
from klinestore.ingest.errors import IngestError
from klinestore.ingest.klines import Gap, KlineSeries, empty_frame
from klinestore.ingest.markprice import Mark, MarkPrices
from klinestore.ingest.orderbook import OrderBook
from klinestore.ingest.trades import TradeWindow


class UnknownSeries(IngestError, KeyError):
    """A (symbol, interval), trade window or book that is not subscribed."""

    def __str__(self) -> str:
        return str(self.args[0])


class MarketState:
    """Everything ingest knows about the market right now."""

    def __init__(
        self, cache: CacheConfig, clock: ExchangeClock, *, on_gap: Callable[[Gap], None] | None = None,
        book_levels: int | None = None,
    ) -> None:
        self.cache = cache
        self.book_levels = book_levels  # levels per side a book keeps (the snapshot's depth)
        self.clock = clock
        self.klines: dict[tuple[str, str], KlineSeries] = {}
        self.trades: dict[str, TradeWindow] = {}
        self.books: dict[str, OrderBook] = {}
        self.marks = MarkPrices()
        self.rejected: Counter[str] = Counter()
        self._on_gap = on_gap

    # --- membership -------------------------------------------------------------------------

    def add_series(self, symbol: str, interval: str) -> KlineSeries:
        key = (symbol, interval)
        series = self.klines.get(key)
        if series is None:
            capacity = self.cache.kline_1m_history if interval == "1m" else self.cache.kline_max_size
            series = KlineSeries(symbol, interval, capacity, rejected=self.rejected, on_gap=self._on_gap)
            self.klines[key] = series
        return series

    def add_trades(self, symbol: str) -> TradeWindow:
        window = self.trades.get(symbol)
        if window is None:
            window = TradeWindow(symbol, self.cache.aggtrade_max_size, self.cache.aggtrade_time_window,
                                 rejected=self.rejected)
            self.trades[symbol] = window
        return window

    def add_book(self, symbol: str) -> OrderBook:
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = OrderBook(symbol, max_levels=self.book_levels)
        return book

    def remove_symbol(self, symbol: str) -> None:
        """Forget a symbol (delisted): its series, trades, book and mark."""
        for key in [k for k in self.klines if k[0] == symbol]:
            del self.klines[key]
        self.trades.pop(symbol, None)
        self.books.pop(symbol, None)
        self.marks.remove(symbol)

    # --- reading ------------------------------------------------------------------------------

    def series(self, symbol: str, interval: str) -> KlineSeries:
        try:
            return self.klines[(symbol, interval)]
        except KeyError:
            raise UnknownSeries(f"{symbol} {interval} is not subscribed") from None

    def bars(
        self, symbol: str, interval: str, *, min_bars: int = 1, allow_gaps: bool = False,
        include_open: bool = False, limit: int | None = None,
    ) -> pl.DataFrame:
        """Closed bars of one series as Polars, oldest first; EMPTY while it is warming up.

        A series is ready when it holds the newest bar that must have closed by exchange-now;
        the frame is its newest contiguous run (``allow_gaps`` returns everything kept), empty
        unless it has at least ``min_bars`` bars.
        """
        series = self.series(symbol, interval)
        if not series.ready(self.clock.now_ms()):
            return empty_frame(symbol, interval)
        available = len(series.ring) if allow_gaps else series.contiguous_count()
        if available < min_bars:
            return empty_frame(symbol, interval)
        return series.frame(allow_gaps=allow_gaps, include_open=include_open, limit=limit)

    def trades_frame(self, symbol: str) -> pl.DataFrame:
        window = self.trades.get(symbol)
        if window is None:
            raise UnknownSeries(f"{symbol} aggTrade is not subscribed")
        return window.frame(self.clock.now_ms())

    def book(self, symbol: str) -> OrderBook:
        try:
            return self.books[symbol]
        except KeyError:
            raise UnknownSeries(f"{symbol} depth is not subscribed") from None

    def mark(self, symbol: str) -> Mark | None:
        return self.marks.get(symbol)

    def warming_up(self) -> list[tuple[str, str]]:
        """(symbol, interval) pairs whose frames are empty right now."""
        now = self.clock.now_ms()
        return sorted((k for k, s in self.klines.items() if not s.ready(now)),
                      key=lambda k: (k[0], interval_sort_key(k[1])))

    def readiness(self) -> dict[str, dict[str, dict[str, int | bool]]]:
        """Per symbol and interval: ready, bars kept, contiguous bars, newest closed open time."""
        now = self.clock.now_ms()
        out: dict[str, dict[str, dict[str, int | bool]]] = {}
        for (symbol, interval), s in sorted(self.klines.items(), key=lambda kv: (kv[0][0], interval_sort_key(kv[0][1]))):
            out.setdefault(symbol, {})[interval] = {
                "ready": s.ready(now), "bars": len(s.ring), "contiguous": s.contiguous_count(),
                "last_open_time": s.last_open_time,
            }
        return out

    def ring_bytes(self) -> int:
        return sum(s.ring.nbytes for s in self.klines.values()) + sum(w.ring.nbytes for w in self.trades.values())
