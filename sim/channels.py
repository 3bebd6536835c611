"""Live streams: each channel turns exchange time into Binance frames for one stream name.

A channel is shared by every connection subscribed to its stream and produces, for the
window of exchange time since its last call, what the exchange would have pushed. The pump
calls it at most once per real tick, which coalesces at high speed without losing meaning:
open-bar kline updates collapse to the latest, depth diffs merge (their U/u/pu chain stays
whole); closed klines (``x: true``), aggTrades, trades and mark prices (``feeds.py``) are
never skipped, and each closed bar is sent before the next bar's first update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from klinestore.core.intervals import HOUR_MS, MINUTE_MS, bar_open, next_open
from klinestore.ingest.protocol.streams import StreamName
from klinestore.sim import encode
from klinestore.sim.bars import Bar, finish, merge
from klinestore.sim.book import STEP_MS, Books
from klinestore.sim.faults import FaultState
from klinestore.sim.instruments import SymbolSpec
from klinestore.sim.market import Market
from klinestore.sim.prices import Prices
from klinestore.sim.tickers import Tickers

_POLL_MS = 1000  # an aggTrade stream between trading spells looks again after this long
_DEPTH_SPEEDS = {"0ms": STEP_MS, "100ms": 100, "250ms": 250, "500ms": 500}


@dataclass(frozen=True, slots=True)
class Context:
    """What channels read: the market, the books, pending faults, the update period, mark and
    index prices, rolling 24 h windows."""

    market: Market
    books: Books
    faults: FaultState
    kline_update_ms: int
    prices: Prices
    tickers: Tickers


class Channel:
    """One stream. ``produce(now)`` returns the payloads due since the last call."""

    def __init__(self, ctx: Context, stream: StreamName, now: int) -> None:
        self.ctx = ctx
        self.name = stream.name
        self.symbol = stream.symbol
        self.next_due = now
        self.subscribers: dict[int, Any] = {}  # session id -> session

    def produce(self, now: int) -> list[bytes]:
        raise NotImplementedError

    def dormant(self, now: int) -> bool:
        """True (and due at the next minute) while the symbol is not listed: listings start on
        a minute, so a stream subscribed before its symbol exists wakes when it can trade."""
        if self.ctx.market.span(self.symbol) is not None:
            return False
        self.next_due = now // MINUTE_MS * MINUTE_MS + MINUTE_MS
        return True


class KlineChannel(Channel):

    def __init__(self, ctx: Context, stream: StreamName, now: int) -> None:
        super().__init__(ctx, stream, now)
        assert stream.interval is not None
        self.interval = stream.interval
        self.contract = stream.contract_type.upper() if stream.contract_type else None
        self.period = ctx.kline_update_ms
        self.last = now // self.period * self.period
        self.next_due = self.last + self.period
        self._acc_key: tuple[int, int] | None = None
        self._acc: Bar | None = None

    def _encode(self, event_ms: int, bar: Bar, closed: bool) -> bytes:
        spec = self.ctx.market.spec(self.symbol)
        if self.contract is None:
            return encode.kline(event_ms, bar, spec, self.interval, closed)
        return encode.continuous_kline(event_ms, bar, spec, self.interval, closed, self.contract)

    def produce(self, now: int) -> list[bytes]:
        b = now // self.period * self.period
        if b <= self.last:
            return []
        if self.dormant(now):
            self.last = b
            return []
        market, iv = self.ctx.market, self.interval
        span = market.span(self.symbol)
        assert span is not None
        out: list[bytes] = []
        opened = bar_open(self.last, iv)
        end = next_open(opened, iv)
        while end <= b:
            if span.first_ms < end and (span.end_ms is None or opened < span.end_ms):
                bar = market.bucket(self.symbol, iv, opened, end)
                if bar is not None:
                    out.append(self._encode(end, bar, True))
            opened, end = end, next_open(end, iv)
        if b > opened and span.holds(b):
            bar = self._open_bar(opened, b)
            if bar is not None:
                out.append(self._encode(b, bar, False))
        self.last = b
        self.next_due = b + self.period
        return out

    def _open_bar(self, opened: int, t: int) -> Bar | None:
        """The open bar at ``t``: closed minutes folded once, plus the minute in progress."""
        market = self.ctx.market
        minute = t // MINUTE_MS * MINUTE_MS
        key = self._acc_key
        if key is None or key[0] != opened or key[1] > minute:
            self._acc = None
            start = opened
        else:
            start = key[1]
        if start < minute:
            for bar in market.minutes(self.symbol, start, minute):
                self._acc = merge(self._acc, bar)
        self._acc_key = (opened, minute)
        partial = market.partial_minute(self.symbol, t)
        total = self._acc if partial is None else merge(self._acc, partial)
        return None if total is None else finish(total, opened, self.interval)


class AggTradeChannel(Channel):

    def __init__(self, ctx: Context, stream: StreamName, now: int) -> None:
        super().__init__(ctx, stream, now)
        self.last = now
        self.next_due = now + 1

    def produce(self, now: int) -> list[bytes]:
        if now <= self.last:
            return []
        if self.dormant(now):
            self.last = now
            return []
        market = self.ctx.market
        out: list[bytes] = []
        for chunk, lo, hi in market.trades(self.symbol, self.last, now):
            spec = market.spec(self.symbol)
            t = chunk.trades
            rows = zip(
                t.agg_id[lo:hi].tolist(), t.price[lo:hi].tolist(), t.qty[lo:hi].tolist(),
                t.first_tid[lo:hi].tolist(), t.last_tid[lo:hi].tolist(), t.time[lo:hi].tolist(),
                t.maker[lo:hi].tolist(),
            )
            out.extend(self._encode(spec, rows))
        self.last = now
        upcoming = market.next_trade_time(self.symbol, now)
        self.next_due = upcoming if upcoming is not None else min(now // HOUR_MS * HOUR_MS + HOUR_MS, now + _POLL_MS)
        return out

    def _encode(self, spec: SymbolSpec, rows: Iterable[tuple[int, int, int, int, int, int, bool]]) -> list[bytes]:
        return [encode.agg_trade(spec, *row) for row in rows]


class DepthChannel(Channel):

    def __init__(self, ctx: Context, stream: StreamName, now: int) -> None:
        super().__init__(ctx, stream, now)
        self.period = _DEPTH_SPEEDS[stream.speed or "250ms"]
        self.levels = stream.levels
        self.last_k = now // self.period * self.period // STEP_MS
        self.next_due = (self.last_k * STEP_MS) + self.period
        self._gap_epoch = ctx.faults.depth_gaps.get(self.symbol, (0, 0))[0]
        self._skip = 0

    def produce(self, now: int) -> list[bytes]:
        b = now // self.period * self.period
        k1 = b // STEP_MS
        if k1 <= self.last_k:
            return []
        k0, self.last_k = self.last_k, k1
        self.next_due = b + self.period
        market = self.ctx.market
        if self.dormant(now) or not market.trading(self.symbol, b):
            return []
        if self._gapped():
            return []
        book = self.ctx.books.get(self.symbol)
        diff = book.diff(k0, k1)
        if self.levels is not None:  # partial depth: the top levels, with the diff's ids
            snap = book.snapshot(k1, self.levels)
            diff = dataclasses.replace(diff, bids=snap.bids, asks=snap.asks)
        return [encode.depth_update(b, market.spec(self.symbol), diff)]

    def _gapped(self) -> bool:
        """True while a ``depth_gap`` fault swallows this stream's updates."""
        epoch, count = self.ctx.faults.depth_gaps.get(self.symbol, (0, 0))
        if epoch != self._gap_epoch:
            self._gap_epoch, self._skip = epoch, count
        if self._skip > 0:
            self._skip -= 1
            self.ctx.faults.applied["depth_gap"] += 1
            return True
        return False


class BookTickerChannel(Channel):
    """Best bid and ask on every book step (50 ms); coalesced to the latest per tick."""

    def __init__(self, ctx: Context, stream: StreamName, now: int) -> None:
        super().__init__(ctx, stream, now)
        self.last_k = now // STEP_MS
        self.next_due = (self.last_k + 1) * STEP_MS

    def produce(self, now: int) -> list[bytes]:
        k = now // STEP_MS
        if k <= self.last_k:
            return []
        self.last_k, self.next_due = k, (k + 1) * STEP_MS
        market = self.ctx.market
        if self.dormant(now) or not market.trading(self.symbol, k * STEP_MS):
            return []
        book = self.ctx.books.get(self.symbol)
        return [encode.book_ticker(k * STEP_MS, market.spec(self.symbol), book.update_id(k), book.top(k))]
