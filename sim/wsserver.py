"""The WebSocket server: websockets glue around ``control`` (rules) and ``hub`` (data).

websockets' own keepalive is off: the exchange pings every 3 minutes of *exchange* time and
drops connections that stay silent to its pings for 10, which a housekeeping task checks
along with the 24 h connection age. Compression is off, as on fstream.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from klinestore.sim import control
from klinestore.sim.clock import ExchangeClock
from klinestore.sim.config import SimConfig
from klinestore.sim.faults import FaultState
from klinestore.sim.hub import Hub
from klinestore.sim.session import CLOSE_GOING_AWAY, CLOSE_POLICY, Session, Stats

log = logging.getLogger(__name__)

HOUSEKEEPING = 0.02  # real seconds between checks of pings, pongs and ages
MAX_MESSAGE = 2**20


class WsServer:
    """Accepts connections, answers control messages, keeps the exchange's timers."""

    def __init__(self, config: SimConfig, clock: ExchangeClock, hub: Hub, faults: FaultState, stats: Stats) -> None:
        self.config = config
        self.clock = clock
        self.hub = hub
        self.faults = faults
        self.stats = stats
        self.sessions: dict[int, Session] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._ping_ms = int(config.ping_interval * 1000)
        self._pong_ms = int(config.pong_timeout * 1000)
        self._age_ms = int(config.max_connection_age * 1000)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def start(self) -> None:
        self._server = await serve(
            self._handle, self.config.host, self.config.port, process_request=self._check_path,
            compression=None, ping_interval=None, ping_timeout=None, close_timeout=self.config.close_timeout,
            max_size=MAX_MESSAGE, server_header="klinestore-sim",
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _check_path(self, connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        if control.parse_path(request.path) is None:
            return connection.respond(404, f"Not Found: {request.path}\n")
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        endpoint = control.parse_path(conn.request.path)  # type: ignore[union-attr]
        assert endpoint is not None
        session = Session(
            next(self._ids), conn, endpoint, conn.request.path, self.clock.now_ms(),  # type: ignore[union-attr]
            faults=self.faults, stats=self.stats, buffer_limit=self.config.send_buffer_limit,
            max_messages=self.config.max_messages_per_second, ping_interval_ms=self._ping_ms,
        )
        self.sessions[session.id] = session
        self.stats.connections += 1
        try:
            names = tuple(n for n in dict.fromkeys(endpoint.streams) if control.acknowledged(n))
            if len(names) > self.config.max_streams_per_connection:
                session.close(CLOSE_POLICY, control.TOO_MANY_SUBSCRIPTIONS)
            else:
                self.hub.subscribe(session, names)
                await self._serve(session)
        except ConnectionClosed:
            pass
        finally:
            self.hub.forget(session)
            del self.sessions[session.id]
        await conn.wait_closed()

    async def _serve(self, session: Session) -> None:
        async for message in session.conn:
            await session.wait_unstalled()
            if session.closing:
                return
            if not session.admit_message():
                self.stats.rate_limit_closes += 1
                session.close(CLOSE_POLICY, control.TOO_MANY_REQUESTS)
                return
            outcome = control.handle(
                message, subscriptions=session.subscriptions, combined=session.combined,
                max_streams=self.config.max_streams_per_connection,
            )
            session.reply(outcome.reply)
            if outcome.close is not None:
                session.close(*outcome.close)
                return
            if outcome.subscribe:
                self.hub.subscribe(session, outcome.subscribe)
            if outcome.unsubscribe:
                self.hub.unsubscribe(session, outcome.unsubscribe)
            if outcome.combined is not None:
                session.combined = outcome.combined

    async def housekeeping(self) -> None:
        """Exchange timers of every connection: 24 h age, pings every 3 min, pong deadline."""
        while True:
            await asyncio.sleep(HOUSEKEEPING)
            now = self.clock.now_ms()
            for session in list(self.sessions.values()):
                if session.closing:
                    continue
                if now - session.connected_ms >= self._age_ms:
                    self.stats.age_closes += 1
                    session.close(CLOSE_GOING_AWAY, "Connection reached the 24h limit")
                elif session.stalled:
                    continue
                elif session.awaiting_pong_since is not None and now - session.awaiting_pong_since >= self._pong_ms:
                    self.stats.pong_timeouts += 1
                    session.close(CLOSE_POLICY, "Pong timeout")
                elif now >= session.next_ping_ms:
                    session.next_ping_ms = now + self._ping_ms
                    session.send_ping(now)

    # --- connection faults ----------------------------------------------------------------

    def act(self, kind: str, **options: Any) -> int:
        """Apply a connection fault to every open connection; returns how many it touched."""
        touched = 0
        for session in list(self.sessions.values()):
            if session.closing:
                continue
            touched += 1
            if kind == "drop":
                session.close(options["code"], "Simulated drop")
            elif kind == "reset":
                session.reset("simulated reset")
            elif kind == "stall":
                session.stall(options["seconds"])
        self.stats.faulted[kind] = self.stats.faulted.get(kind, 0) + touched
        return touched
