"""Live ingest as one object: connections, state, REST, order-book sync, back-fill, listings.

``Feed`` wires the sans-I/O core (state, dispatcher, order books) to the asyncio edges (pool,
REST client, snapshot and back-fill workers) and is what the service starts and stops. It is
also the read API: ``bars()``, ``book()``, ``mark()``, ``trades()``, ``missing_streams()``,
``warming_up()``, and the hooks ``on_kline_close`` and ``on_gap``.

Modes (seed v4.4): WebSocket-only (default) never calls REST klines (the REST client is built
refusing them); gaps are measured and handed to ``on_gap``. Fallback additionally back-fills
every gap (and, at start, the history a series lacks) from REST klines. Either mode uses
REST for server time, depth snapshots and exchangeInfo.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx
import polars as pl
from websockets.asyncio.client import connect

from klinestore.core.intervals import bar_open, interval_ms
from klinestore.core.schema import Bar
from klinestore.ingest.backfill import Backfill
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.config import FeedSettings
from klinestore.ingest.depthsync import DepthSync
from klinestore.ingest.dispatcher import Dispatcher
from klinestore.ingest.errors import IngestError
from klinestore.ingest.eventlog import EventLog
from klinestore.ingest.hooks import Hook
from klinestore.ingest.klines import Gap, frame_rows
from klinestore.ingest.lag import LoopLag
from klinestore.ingest.ledger import ApiLedger
from klinestore.ingest.listings import ListingChange, Listings, shard_of
from klinestore.ingest.liveness import Activity, Liveness
from klinestore.ingest.markbars import MarkSeriesOut, RowSink
from klinestore.ingest.markprice import Mark
from klinestore.ingest.orderbook import OrderBook
from klinestore.ingest.pool import Pool
from klinestore.ingest.protocol.streams import (
    agg_trade_stream,
    depth_stream,
    kline_stream,
    mark_price_stream,
    parse_stream,
)
from klinestore.ingest.protocol.urls import plan_connections
from klinestore.ingest.rest import RestClient
from klinestore.ingest.sink import BarSink
from klinestore.ingest.state import MarketState

log = logging.getLogger(__name__)

#: Gaps kept for status (all of them go to ``on_gap``).
RECENT_GAPS = 100

KlineCloseCallback = Callable[[Bar], Awaitable[None] | None]
GapCallback = Callable[[str, str, int, int, str], Awaitable[None] | None]


class Feed:
    """Everything live ingest does, for ``config.symbols`` of this shard (or exactly ``symbols``)."""

    def __init__(
        self,
        config: FeedSettings,
        sink: BarSink,
        *,
        symbols: Sequence[str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        connect_fn: Callable[..., Any] = connect,
        rng: random.Random | None = None,
        series_sinks: Mapping[str, RowSink] | None = None,
    ) -> None:
        self.config = config
        self.symbols: dict[str, tuple[str, ...]] = {}  # symbol -> its kline intervals
        self.clock = ExchangeClock()
        self.events = EventLog(now_ms=self.clock.now_ms)
        self.ledger = ApiLedger()
        self.kline_close = Hook("on_kline_close")
        self.gap = Hook("on_gap")
        self.gap_filled = Hook("on_gap_filled")
        self.recent_gaps: deque[Gap] = deque(maxlen=RECENT_GAPS)
        self.gaps_reported = 0
        self.state = MarketState(config.websocket.cache, self.clock, on_gap=self._on_gap,
                                 book_levels=config.websocket.streams.depth_snapshot_limit)
        self.rest = RestClient(config.websocket.rest_url, config.rest, self.clock, ledger=self.ledger,
                               allow_klines=config.modes.rest_klines_allowed, transport=transport)
        self.depth_sync = DepthSync(
            self.state, self.rest, config.websocket.streams.depth_snapshot_limit,
            refresh_every=config.websocket.streams.depth_refresh_interval,
        )
        self.activity = Activity()
        #: mark/index 1m bars and funding events, when storage keeps them (``series_sinks``)
        self.series = (MarkSeriesOut(series_sinks, unknown_mark=not config.modes.rest_klines_allowed)
                       if series_sinks else None)
        self.dispatcher = Dispatcher(self.state, sink, self.clock, on_close=self.kline_close,
                                     on_book_wants_snapshot=self.depth_sync.want, activity=self.activity,
                                     series=self.series)
        hb = config.websocket.heartbeat
        self.liveness = Liveness(self.activity, self.state, self.clock, timeout=hb.timeout,
                                 mark_price_timeout=hb.mark_price_timeout)
        self.pool = Pool(config.websocket, self.dispatcher, self.clock, self.events, rng=rng,
                         on_lost=self._on_lost, connect_fn=connect_fn, liveness=self.liveness)
        self.backfill: Backfill | None = None
        if config.modes.rest_klines_allowed:
            self.backfill = Backfill(self.state, self.dispatcher, self.rest, self.clock, on_filled=self._on_filled)
        self.listings = Listings(config.sharding.shard_id, config.sharding.num_shards)
        self.lag = LoopLag()
        self.started_at = time.monotonic()
        self.running = False
        self.skipped_symbols: list[str] = []  # configured but not trading at start
        self._listing_lock = asyncio.Lock()
        shard = config.sharding
        if symbols is None:  # with several shards, each process takes the symbols that hash to it
            symbols = [s for s in config.symbols if shard_of(s, shard.num_shards) == shard.shard_id]
        for symbol in symbols:
            self._add_state(symbol, config.websocket.streams.kline_intervals)
        pool = config.websocket.connection_pool  # a bound the streams cannot fit fails here, before any I/O
        plan_connections(self.streams(), pool.max_streams_per_connection, pool.max_connections)

    # --- hooks -------------------------------------------------------------------------------------

    def on_kline_close(self, callback: KlineCloseCallback) -> KlineCloseCallback:
        """Call ``callback(bar)`` for every closed bar once it is durable (live and back-filled alike)."""
        return self.kline_close.add(callback)

    def on_gap(self, callback: GapCallback) -> GapCallback:
        """Call ``callback(symbol, interval, start_open_ms, end_open_ms, reason)`` for every gap found.

        ``reason`` is ``start`` (between history from disk and the first live bar),
        ``reconnect`` (across a lost connection) or ``gap`` (anything else).
        """
        return self.gap.add(callback)

    def on_gap_filled(self, callback: Callable[[str, str, int, int, int], Awaitable[None] | None]) -> Any:
        """Fallback mode: ``callback(symbol, interval, start_open_ms, end_open_ms, bars)`` after a back-fill."""
        return self.gap_filled.add(callback)

    # --- lifecycle ---------------------------------------------------------------------------------

    def load_history(self, bars: Iterable[Bar]) -> int:
        """Fill the ring buffers from disk before ``start`` (warm restart); returns bars taken."""
        by_series: dict[tuple[str, str], list[Bar]] = {}
        for bar in bars:
            by_series.setdefault((bar.symbol, bar.interval), []).append(bar)
        taken = 0
        for (symbol, interval), group in by_series.items():
            series = self.state.klines.get((symbol, interval))
            if series is not None:
                taken += len(series.insert(group))
        return taken

    def load_history_frames(self, frames: Mapping[tuple[str, str], pl.DataFrame]) -> int:
        """Warm restart from storage (``BarStore.load_recent``): frames of bars per (symbol, interval)."""
        taken = 0
        for (symbol, interval), frame in frames.items():
            series = self.state.klines.get((symbol, interval))
            if series is not None and frame.height:
                taken += series.load_rows(frame_rows(frame))
        return taken

    async def start(self) -> None:
        """Sync the clock, look at exchangeInfo, open the connections, start the workers."""
        self.started_at = time.monotonic()
        self.kline_close.start()
        self.gap.start()
        self.gap_filled.start()
        try:
            await self.rest.server_time()
        except IngestError as exc:
            log.warning("server time unavailable (%s); the clock will follow event times", exc)
        await self._baseline_listings()
        self.depth_sync.start()
        self.lag.start()
        if self.backfill is not None:
            self.backfill.start()
            self._request_history()
        await self.pool.start(self.streams())
        self.running = True

    async def stop(self) -> None:
        """Close connections and workers; queued callbacks get a chance to run."""
        self.running = False
        await self.pool.stop()
        await self.depth_sync.stop()
        await self.lag.stop()
        if self.backfill is not None:
            await self.backfill.stop()
        for hook in (self.kline_close, self.gap, self.gap_filled):
            await hook.drain()
            await hook.close()
        await self.rest.aclose()

    # --- subscriptions -----------------------------------------------------------------------------

    def streams_of(self, symbol: str, intervals: Iterable[str]) -> list[str]:
        s = self.config.websocket.streams
        names = [kline_stream(symbol, i) for i in intervals]
        if s.aggtrade:
            names.append(agg_trade_stream(symbol))
        if s.depth:
            names.append(depth_stream(symbol, s.depth_speed))
        if s.mark_price:
            names.append(mark_price_stream(symbol))
        return names

    def streams(self) -> list[str]:
        return [n for symbol, intervals in self.symbols.items() for n in self.streams_of(symbol, intervals)]

    async def add_symbol(self, symbol: str, intervals: Sequence[str] | None = None) -> list[str]:
        """Subscribe a symbol live (no reconnects); returns the streams placed."""
        intervals = tuple(intervals or self.config.websocket.streams.kline_intervals)
        self._add_state(symbol, intervals)
        if self.backfill is not None:
            self._request_history([symbol])
        return await self.pool.add(self.streams_of(symbol, intervals))

    async def remove_symbol(self, symbol: str) -> None:
        intervals = self.symbols.pop(symbol, None)
        if intervals is None:
            return
        await self.pool.remove(self.streams_of(symbol, intervals))
        self.state.remove_symbol(symbol)
        self.activity.forget(symbol)

    async def refresh_listings(self) -> ListingChange:
        """exchangeInfo: subscribe new TRADING perpetuals to the new-listing intervals, drop delisted ones."""
        async with self._listing_lock:
            info = await self.rest.exchange_info()
            change = self.listings.update(info, set(self.symbols))
            for symbol in change.new:
                placed = await self.add_symbol(symbol, self.config.websocket.streams.new_listing_intervals)
                log.info("new listing %s: %d streams subscribed", symbol, len(placed))
            for symbol in change.delisted:
                await self.remove_symbol(symbol)
                log.info("delisted %s: unsubscribed", symbol)
            if change.invalid:
                log.warning("exchangeInfo has %d invalid symbol names, skipped: %s", len(change.invalid),
                            ", ".join(change.invalid[:5]))
            return change

    # --- reading -----------------------------------------------------------------------------------

    def bars(self, symbol: str, interval: str, **options: Any) -> pl.DataFrame:
        """Closed bars (see ``MarketState.bars``): empty while the series is warming up."""
        return self.state.bars(symbol, interval, **options)

    def trades(self, symbol: str) -> pl.DataFrame:
        return self.state.trades_frame(symbol)

    def book(self, symbol: str) -> OrderBook:
        return self.state.book(symbol)

    def mark(self, symbol: str) -> Mark | None:
        return self.state.mark(symbol)

    def missing_streams(self) -> dict[str, list[str]]:
        """Per symbol, the streams silent while data was due (DataQual's input; see ingest.liveness)."""
        return self.pool.missing_streams()

    def quiet_streams(self) -> dict[str, list[str]]:
        """Per symbol, the streams silent because their market had nothing to report (not penalised)."""
        return self.pool.quiet_streams()

    def warming_up(self) -> list[tuple[str, str]]:
        return self.state.warming_up()

    # --- internals ---------------------------------------------------------------------------------

    def _add_state(self, symbol: str, intervals: Iterable[str]) -> None:
        intervals = tuple(intervals)
        self.symbols[symbol] = intervals
        for interval in intervals:
            self.state.add_series(symbol, interval)
        s = self.config.websocket.streams
        if s.aggtrade:
            self.state.add_trades(symbol)
        if s.depth:
            self.state.add_book(symbol)

    async def _baseline_listings(self) -> None:
        """The first exchangeInfo: what trades now is not "new"; configured symbols that do not trade are skipped."""
        try:
            self.listings.update(await self.rest.exchange_info(), set(self.symbols))
        except IngestError as exc:
            log.warning("exchangeInfo unavailable at start (%s); subscribing the configured symbols", exc)
            return
        for symbol in self.listings.not_trading(set(self.symbols)):
            log.warning("%s is not a TRADING perpetual on the exchange; not subscribed", symbol)
            self.symbols.pop(symbol)
            self.state.remove_symbol(symbol)
            self.skipped_symbols.append(symbol)

    def _request_history(self, symbols: Iterable[str] | None = None) -> None:
        """Fallback: series without any bar get their ring's worth of history from REST."""
        now = self.clock.now_ms()
        if now is None or self.backfill is None:
            return
        wanted = set(self.symbols if symbols is None else symbols)
        for (symbol, interval), series in self.state.klines.items():
            if symbol not in wanted or series.last_open_time >= 0 or interval == "1M":
                continue
            current = bar_open(now, interval)
            step = interval_ms(interval)
            self.backfill.request(Gap(symbol, interval, current - series.ring.capacity * step, current - step, "start"))

    def _on_gap(self, gap: Gap) -> None:
        self.gaps_reported += 1
        self.recent_gaps.append(gap)
        log.warning("gap %s %s: %d bars from %d (%s)", gap.symbol, gap.interval, gap.bar_count(), gap.start_open_ms,
                    gap.reason)
        self.gap.emit(gap.symbol, gap.interval, gap.start_open_ms, gap.end_open_ms, gap.reason)
        if self.backfill is not None:
            self.backfill.request(gap)

    def _on_filled(self, gap: Gap, bars: int) -> None:
        self.gap_filled.emit(gap.symbol, gap.interval, gap.start_open_ms, gap.end_open_ms, bars)

    def _on_lost(self, streams: list[str]) -> None:
        for name in streams:
            if "@kline_" in name:
                parsed = parse_stream(name)
                series = self.state.klines.get((parsed.symbol, parsed.interval or ""))
                if series is not None:
                    series.mark_interrupted()
