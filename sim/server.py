"""The :class:`Simulator`: a Binance-compatible exchange on loopback, in one event loop.

It ties the market (generated or replayed), the WebSocket server, the REST server and the
control endpoints to one exchange clock. Build it from a :class:`SimConfig`, ``await
start()``, use ``ws_url`` and ``rest_url`` like Binance's base URLs, ``await stop()``.
Everything is single-threaded on its loop; :class:`~klinestore.sim.thread.SimThread` runs
it on a thread of its own for synchronous callers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from klinestore.core.errors import InvalidInterval, InvalidSymbol
from klinestore.core.intervals import MINUTE_MS, check_interval, next_open
from klinestore.core.symbols import check_symbol
from klinestore.sim.admin import AdminApi
from klinestore.sim.archive import PREFIX as ARCHIVE_PREFIX
from klinestore.sim.archive import ArchiveHost
from klinestore.sim.bars import rest_row
from klinestore.sim.book import STEP_MS, Books
from klinestore.sim.channels import Context
from klinestore.sim.clock import ExchangeClock, iso, now_floor_minute
from klinestore.sim.config import SimConfig
from klinestore.sim.errors import ListingError, SimConfigError, SimError
from klinestore.sim.faults import DROP_CLOSE_CODE, FaultState, parse_fault
from klinestore.sim.generator import GeneratedSource
from klinestore.ingest.protocol.http import HttpServer, Request, Response
from klinestore.sim.hub import Hub
from klinestore.sim.limits import WeightLimiter
from klinestore.sim.listings import Listings
from klinestore.sim.market import Market
from klinestore.sim.marketdata import agg_trades
from klinestore.sim.prices import Prices
from klinestore.sim.replay import ReplaySource
from klinestore.sim.rest import BinanceRest
from klinestore.sim.session import Stats
from klinestore.sim.tickers import Tickers
from klinestore.sim.wsserver import WsServer

log = logging.getLogger(__name__)

TRUTH_KINDS = ("funding", "mark", "index", "aggTrades")


class Simulator:
    """A simulated Binance USD-M futures exchange (market data only)."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config = config or SimConfig()
        self.source: GeneratedSource | ReplaySource
        if config.replay_dir is not None:
            self.source = ReplaySource(config.replay_dir, config.symbols)
            symbols = self.source.symbols
            initial = {s: self.source.first_ms(s) for s in symbols}
            ends = {s: self.source.end_ms(s) for s in symbols}
            origin = min(initial.values())
            start = origin if config.start_ms is None else config.start_ms
        else:
            self.source = GeneratedSource(config.seed, config.activity, frozenset(config.quiet_symbols))
            symbols = config.symbols
            start = now_floor_minute() if config.start_ms is None else config.start_ms
            origin = start - config.history_minutes * MINUTE_MS
            initial = {s: min(self.source.params(s).onboard_ms, origin // MINUTE_MS * MINUTE_MS) for s in symbols}
            ends = {}
        if isinstance(self.source, ReplaySource) and any(e.action == "list" for e in config.schedule):
            raise SimConfigError("schedule", "replay mode cannot list symbols: the archives are the market")
        try:
            listings = Listings(initial, config.schedule)
        except ListingError as exc:
            raise SimConfigError("schedule", str(exc)) from None
        self.symbols = tuple(symbols)
        self.clock = ExchangeClock(start, config.speed)
        self.market = Market(self.source, listings, origin, ends=ends, cache_hours=max(512, 4 * len(symbols)))
        self.books = Books(
            config.seed, config.depth_levels, prices_at=self.market.prices_at,
            tick_units=lambda s: self.market.spec(s).tick_units, mean_qty=self.source.typical_qty,
        )
        self.faults = FaultState()
        self.counters = Stats()
        self.prices = Prices(self.market, self.source.typical_qty)
        self.tickers = Tickers(self.market)
        self.hub = Hub(Context(self.market, self.books, self.faults, int(config.kline_update_interval * 1000),
                               self.prices, self.tickers), self.clock, config.tick)
        self.ws = WsServer(config, self.clock, self.hub, self.faults, self.counters)
        self.limiter = WeightLimiter(self.clock, config.weight_limit, ban_after=config.ban_after_429s,
                                     ban_ms=int(config.ban_duration * 1000))
        self.rest = BinanceRest(self.market, self.books, self.clock, self.faults, self.limiter, self.prices, self.tickers)
        self.archive = ArchiveHost(self.market, self.clock, self.faults, self.prices)
        self.admin = AdminApi(self)
        self.http = HttpServer(self._route, config.host, config.rest_port)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise SimError("the simulator is already started")
        try:
            await self.ws.start()
            await self.http.start()
        except OSError as exc:
            await self.ws.stop()
            raise SimError(f"cannot listen on {self.config.host} (ports {self.config.port}, {self.config.rest_port}): {exc.strerror or exc}") from None
        self.clock.restart()
        self._started = True
        self._tasks = [
            asyncio.create_task(self.hub.run(), name="sim-pump"),
            asyncio.create_task(self.ws.housekeeping(), name="sim-housekeeping"),
        ]
        log.info(
            "exchange simulator at %s (REST %s): %s, speed %gx, exchange time %s",
            self.ws_url, self.rest_url, ", ".join(self.symbols), self.config.speed, iso(self.now_ms()),
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if self._started:
            await self.ws.stop()
            await self.http.stop()
        self._started = False

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ws_url(self) -> str:
        return f"ws://{_host(self.config.host)}:{self.ws.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{_host(self.config.host)}:{self.http.port}"

    @property
    def archive_url(self) -> str:
        """Base URL of the archive host (data.binance.vision's layout); the REST server serves it."""
        return self.rest_url

    def now_ms(self) -> int:
        return self.clock.now_ms()

    async def _route(self, request: Request) -> Response:
        if request.path == "/sim" or request.path.startswith("/sim/"):
            return await self.admin.handle(request)
        if request.path.startswith(ARCHIVE_PREFIX):
            return self.archive.handle(request)
        return await self.rest.handle(request)

    # --- ground truth and control --------------------------------------------------------------

    def truth(self, symbol: str, interval: str) -> list[list[int | str]]:
        """Every bar of ``interval`` closed so far, as REST kline rows (REST's corrections included)."""
        symbol, interval = self._symbol(symbol), _interval(interval)
        spec = self.market.spec(symbol)
        return [rest_row(b, spec) for b in self.market.closed_bars(symbol, interval, self.now_ms())]

    def truth_of(self, symbol: str, kind: str, interval: str = "1m") -> list[Any]:
        """Everything of ``kind`` so far: ``funding`` events (``fundingRate`` objects), closed
        ``mark``/``index`` bars of ``interval`` (``markPriceKlines`` rows), ``aggTrades`` objects."""
        symbol, now = self._symbol(symbol), self.now_ms()
        if kind == "funding":
            return [event.body() for event in self.prices.fundings(symbol, 0, now, now)]
        if kind in ("mark", "index"):
            interval = _interval(interval)
            decimals = self.prices.decimals(symbol)
            bars = self.prices.bars(symbol, kind, interval, 0, now, now)
            return [b.row(decimals) for b in bars if next_open(b.open_time, interval) <= now]
        if kind == "aggTrades":
            return list(agg_trades(self.market, symbol, -1, now))
        raise SimError(f"kind must be one of {', '.join(TRUTH_KINDS)} (or none, with interval, for klines), got {kind!r}")

    def ledger(self) -> dict[str, int]:
        """REST requests received per Binance path (every path listed, also at 0)."""
        return dict(self.rest.ledger)

    def inject(self, body: Any) -> dict[str, Any]:
        """Inject a fault (see ``klinestore.sim.faults``); raises FaultError for a bad body."""
        fault = parse_fault(body)
        result: dict[str, Any] = {"injected": fault.to_dict()}
        kind = fault.kind
        if kind in ("drop", "reset", "stall"):
            code = fault.code if fault.code is not None else DROP_CLOSE_CODE
            result["connections"] = self.ws.act(kind, code=code, seconds=fault.seconds)
        elif kind == "stall_stream":
            assert fault.stream is not None and fault.seconds is not None
            self.faults.stall_stream(fault.stream, fault.seconds)
        elif kind in ("malformed", "duplicate", "out_of_order"):
            setattr(self.faults, kind, getattr(self.faults, kind) + (fault.count or 1))
        elif kind == "rest_error":
            self.faults.rest_errors.append([fault.code or 500, fault.count or 1])
        elif kind == "kline_mismatch":
            self._symbol(fault.symbol or "")
            self.faults.mismatches.append(fault)
        elif kind == "depth_gap":
            self.faults.add_depth_gap(self._symbol(fault.symbol or ""), fault.count or 1)
        elif kind == "archive_corrupt":
            self.faults.archive_corrupt += fault.count or 1
        self.faults.record(fault, self.now_ms())
        log.info("fault injected: %s", fault.to_dict())
        return result

    def fault_status(self) -> dict[str, Any]:
        spec_rows = [
            {"symbol": s, "interval": iv, "open_time": t, "rest": rest_row(bar, self.market.spec(s))}
            for (s, iv, t), bar in self.market.corrections.items()
        ]
        return {
            "pending": self.faults.pending(),
            "applied": dict(self.faults.applied),
            "corrections": spec_rows,
            "injected": list(self.faults.injected),
        }

    def connections(self) -> list[dict[str, Any]]:
        now = self.now_ms()
        return [s.describe(now) for s in self.ws.sessions.values()]

    def stats(self) -> dict[str, Any]:
        s = self.counters
        return {
            "now": self.now_ms(), "connections_open": len(self.ws.sessions), "connections_total": s.connections,
            "frames_sent": s.frames, "bytes_sent": s.bytes, "replies_sent": s.replies,
            "slow_consumer_disconnects": s.slow_disconnects, "rate_limit_closes": s.rate_limit_closes,
            "pong_timeouts": s.pong_timeouts, "age_closes": s.age_closes, "faulted_connections": dict(s.faulted),
            "streams_live": len(self.hub.channels), "weight_used": self.limiter.used(), "bans": self.limiter.bans,
        }

    def time_info(self) -> dict[str, Any]:
        now = self.now_ms()
        return {"now": now, "iso": iso(now), "speed": self.config.speed, "start": self.clock.start_ms,
                "origin": self.market.origin_ms}

    def list_symbol(self, symbol: str, at_ms: int | None = None) -> dict[str, Any]:
        """List a new symbol at ``at_ms`` (exchange time; default: the next minute) to trade from then."""
        if isinstance(self.source, ReplaySource):
            raise ListingError("replay mode cannot list symbols: the archives are the market")
        symbol = self._check(symbol)
        at = -(-self.now_ms() // MINUTE_MS) * MINUTE_MS if at_ms is None else at_ms  # "now": the next minute
        window = self.market.listings.list(symbol, at)
        return {"symbol": symbol, "onboardDate": window.onboard_ms}

    def delist_symbol(self, symbol: str, at_ms: int | None = None) -> dict[str, Any]:
        """Delist a symbol now or at ``at_ms``: trading stops, its status becomes SETTLING."""
        symbol = self._check(symbol)
        window = self.market.listings.delist(symbol, self.now_ms() if at_ms is None else at_ms)
        return {"symbol": symbol, "delistDate": window.delist_ms}

    def order_book(self, symbol: str, update_id: int | None = None) -> dict[str, Any]:
        """The full book now, or as of the step whose update id is ``update_id``."""
        symbol = self._symbol(symbol)
        book = self.books.get(symbol)
        k = self.now_ms() // STEP_MS if update_id is None else book.step_of(update_id)
        snap = book.snapshot(k)
        spec = self.market.spec(symbol)
        tick = spec.tick_units

        def side(levels: Any) -> list[list[str]]:
            return [[spec.price(t * tick), spec.qty(q)] for t, q in zip(levels.ticks.tolist(), levels.qty.tolist())]

        return {"lastUpdateId": snap.last_update_id, "bids": side(snap.bids), "asks": side(snap.asks)}

    # --- helpers ------------------------------------------------------------------------------

    def _check(self, symbol: str) -> str:
        try:
            return check_symbol(symbol)
        except InvalidSymbol as exc:
            raise ListingError(str(exc)) from None

    def _symbol(self, symbol: str) -> str:
        """A symbol the exchange has listed (now or scheduled)."""
        try:
            canonical = check_symbol(symbol)
        except InvalidSymbol as exc:
            raise SimError(str(exc)) from None
        if self.market.listings.window(canonical) is None:
            raise SimError(f"unknown symbol {canonical}")
        return canonical


def _interval(interval: str) -> str:
    try:
        return check_interval(interval)
    except InvalidInterval as exc:
        raise SimError(str(exc)) from None


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
