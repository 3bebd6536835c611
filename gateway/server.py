"""The gateway as one object: REST and WebSocket on one port, over the service's live feed.

``Gateway(config, feed, data_dir)`` is started and stopped by the service. It reads the
feed's state (rings, books, marks), the store (``klinestore.storage.Dataset``) and the frames
the dispatcher routes; it never calls the exchange except through the service's REST client
for the cached exchangeInfo. REST is served on ``http://host:port/fapi/...``, WebSocket on
``ws://host:port/market/...``, ``/public/...``, and the legacy ``/ws/...`` and ``/stream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from pathlib import Path
from typing import Any

from klinestore.gateway.budget import WeightBudget
from klinestore.gateway.config import GatewayConfig
from klinestore.gateway.errors import GatewayStartError
from klinestore.gateway.exchangeinfo import ExchangeInfoCache
from klinestore.gateway.fanout import Fanout
from klinestore.gateway.klines import KlineRows
from klinestore.gateway.rest import GatewayRest, authorized
from klinestore.gateway.series import SeriesRoutes
from klinestore.gateway.trades import TradeRoutes
from klinestore.gateway.wsclient import WsClient, handshake
from klinestore.ingest.feed import Feed
from klinestore.ingest.protocol import wsserve
from klinestore.ingest.protocol.http import HttpServer, Request
from klinestore.ingest.protocol.rest import EXCHANGE_INFO_PATH
from klinestore.ingest.protocol.wsserve import Endpoint
from klinestore.storage import Dataset

log = logging.getLogger(__name__)

_SHOWN = 8  # stream names a refusal lists
KERNEL_SEND_BUFFER = 64 * 1024  # bytes the kernel may hold for one WebSocket client


class Gateway:
    """Serves the feed's data as Binance does (see the module docstring)."""

    def __init__(self, config: GatewayConfig, feed: Feed, data_dir: Path | str) -> None:
        self.config = config
        self.feed = feed
        self.info = ExchangeInfoCache(lambda: feed.rest.get(EXCHANGE_INFO_PATH))
        self.rows = KlineRows(Dataset(data_dir))
        self.budget = WeightBudget(config.weight_limit)
        self.rest = GatewayRest(feed.state, self.info, self.rows, self.budget, now_ms=self.now_ms,
                                token=config.token)
        streams = feed.config.websocket.streams
        self.series = SeriesRoutes(self.rest, feed.series, data_dir, symbols=feed.symbols,
                                   stored_intervals=feed.config.storage.resample_intervals,
                                   mark_stream=streams.mark_price)
        self.trades = TradeRoutes(self.rest, feed.series, data_dir, symbols=feed.symbols,
                                  trade_stream=streams.aggtrade)
        self.series.install()
        self.trades.install()
        self.fanout = Fanout(self._set_tap, queue_frames=config.queue_frames)
        self.clients: dict[int, WsClient] = {}
        self._ids = itertools.count(1)
        self._http = HttpServer(self.rest.handle, config.host, config.port, max_connections=config.max_clients,
                                upgrade=self._upgrade)
        self._tasks: list[asyncio.Task[None]] = []
        self.ws_refused = 0
        self.rest_url = ""
        self.ws_url = ""

    def now_ms(self) -> int:
        now = self.feed.clock.now_ms()
        return int(time.time() * 1000) if now is None else now

    def _set_tap(self, tap: Any) -> None:
        self.feed.dispatcher.tap = tap

    async def start(self) -> None:
        await self.info.refresh()
        try:
            await self._http.start()
        except OSError as exc:
            raise GatewayStartError(f"gateway cannot listen on {self.config.host}:{self.config.port}: {exc}") from None
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        self.rest_url = f"http://{host}:{self._http.port}"
        self.ws_url = f"ws://{host}:{self._http.port}"
        self._tasks = [asyncio.create_task(self.fanout.run(), name="gateway-fanout"),
                       asyncio.create_task(self._refresh_info(), name="gateway-exchangeinfo")]
        log.info("gateway: REST %s, WebSocket %s", self.rest_url, self.ws_url)

    async def stop(self) -> None:
        self._set_tap(None)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for client in list(self.clients.values()):
            client.close(1001, "Gateway stopping")
        await self._http.stop()

    async def _refresh_info(self) -> None:
        while True:
            await asyncio.sleep(self.config.exchange_info_refresh)
            await self.info.refresh()

    # --- WebSocket --------------------------------------------------------------------------

    def served(self, name: str, endpoint: Endpoint) -> str | None:
        """None if ``name`` is delivered on ``endpoint``; else the one-line refusal naming it."""
        if not self.feed.dispatcher.routed(name):
            ingested = self.feed.dispatcher.routes()
            shown = ", ".join(sorted(ingested)[:_SHOWN]) + (", ..." if len(ingested) > _SHOWN else "")
            return f"klinestore gateway does not ingest stream {name!r} (it ingests {shown or 'nothing'})"
        stream = wsserve.parse(name)
        if endpoint.route is not None and stream is not None and stream.route is not endpoint.route:
            return f"stream {name!r} is served on /{stream.route.value}, not /{endpoint.route.value}"
        return None

    async def _upgrade(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        endpoint = wsserve.parse_path(request.target or request.path)
        refusal, status = None, 400
        if self.config.token and not authorized(request.headers, self.config.token):
            refusal, status = "Invalid API-key, IP, or permissions for action.", 401
        elif endpoint is None:
            refusal, status = f"Not Found: {request.path}", 404
        elif len(set(endpoint.streams)) > self.config.max_subscriptions:
            refusal = wsserve.TOO_MANY_SUBSCRIPTIONS
        else:
            refusal = next((r for n in endpoint.streams if (r := self.served(n, endpoint)) is not None), None)
        answer, proto = handshake(request, refusal, status)
        writer.write(answer)
        if proto is None or endpoint is None:
            self.ws_refused += 1
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:  # the kernel's share of a client's backlog stays small too (no autotuning to MiBs)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
        client = WsClient(proto, endpoint, reader, writer, self.fanout, send_buffer=self.config.send_buffer,
                          max_streams=self.config.max_subscriptions, served=self.served,
                          ping_interval=self.config.ping_interval, pong_timeout=self.config.pong_timeout)
        key = next(self._ids)
        self.clients[key] = client
        try:
            self.fanout.subscribe(client, tuple(dict.fromkeys(endpoint.streams)))
            await client.serve()
        finally:
            del self.clients[key]

    # --- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        f = self.fanout
        return {
            "rest": self.rest_url, "ws": self.ws_url, "connections": self._http.connections,
            "ws_clients": len(self.clients), "subscribed_streams": len(f.by_stream),
            "rest_requests": sum(self.rest.requests.values()), "weight_refused": self.budget.refused,
            "connections_refused": self._http.refused, "ws_refused": self.ws_refused,
            "unauthorized": self.rest.unauthorized, "frames_in": f.frames_in, "frames_out": f.frames_out,
            "slow_clients_dropped": f.dropped_slow, "overloads": f.overloads, "bad_frames": f.bad_frames,
            "klines_from_store": self.rows.store_reads,
            "agg_trades_from_store": self.trades.store_reads, "exchange_info_failures": self.info.failures,
        }
