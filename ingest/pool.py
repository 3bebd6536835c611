"""The connection pool: which stream rides which connection, liveness, and 24 h rotation.

Placement, refusals and rotation hand-over are decided by the pure
:class:`~klinestore.ingest.placement.Placement`; the pool carries out its changes on real
connections and runs the liveness monitor.

* **Placement**: the pool sizes itself. The start-up streams are planned with
  ``plan_connections`` (split by route, balanced, about ``max_streams_per_connection`` each,
  more, up to the exchange's 1024, only if ``max_connections`` is set and binds); later
  streams go to the least-loaded connection of their route under the preferred size, or to a
  new connection while ``max_connections`` (None: no bound) allows, or past the preference.
  Streams that fit nowhere are ``unplaced`` and shown in status.
* **Refusals**: the exchange's "too many subscriptions" (code 4) lowers that connection's
  limit to what it holds and the refused streams are placed elsewhere; other refusals are
  recorded per stream (status ``refused``), never retried in a loop.
* **Liveness** (every ``heartbeat.check_interval``): a stream silent longer than
  ``heartbeat.timeout`` is judged (:mod:`~klinestore.ingest.liveness`): *missing* when the
  evidence says data was due (``missing_streams()``, per symbol, for DataQual), *quiet* when
  its market simply had nothing to report (``quiet_streams()``: shown, never penalised). A
  stream still missing ``resubscribe_after`` later is UNSUBSCRIBEd and SUBSCRIBEd again on its
  connection. A connection with no frame at all for ``heartbeat.timeout`` is dropped and
  reconnects.
* **Rotation**: the exchange closes a connection after 24 h (of exchange time). After
  ``rotate_after`` a replacement with the same streams is opened and subscribed; once it is
  SUBSCRIBED and delivering, it takes over and the old one closes. Frames arrive twice during
  the overlap; state deduplicates them (klines by open time, trades by id, depth by update id).
* **Storms**: connection attempts pool-wide pass one semaphore (``max_concurrent_connects``),
  and every connection draws its own jittered delays.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from websockets.asyncio.client import connect

from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.config import WebsocketConfig
from klinestore.ingest.connection import Connection, ConnState
from klinestore.ingest.dispatcher import Dispatcher
from klinestore.ingest.errors import ControlError
from klinestore.ingest.eventlog import EventLog
from klinestore.ingest.liveness import Liveness
from klinestore.ingest.placement import Assign, Change, Open, Placement, Release, Retire
from klinestore.ingest.protocol.control import ErrorCode
from klinestore.ingest.protocol.streams import Route, parse_stream
from klinestore.ingest.protocol.urls import stream_url

log = logging.getLogger(__name__)


class Pool:
    """The connections the streams need (at most ``max_connections`` if set) and the streams they carry."""

    def __init__(
        self,
        config: WebsocketConfig,
        dispatcher: Dispatcher,
        clock: ExchangeClock,
        events: EventLog,
        *,
        rng: random.Random | None = None,
        on_lost: Callable[[list[str]], None] | None = None,
        connect_fn: Callable[..., Any] = connect,
        liveness: Liveness | None = None,
    ) -> None:
        self.config = config
        self.liveness = liveness
        self.dispatcher = dispatcher
        self.clock = clock
        self.events = events
        pool = config.connection_pool
        self.placement = Placement(pool.max_streams_per_connection, pool.max_connections)
        self.connections: list[Connection] = []
        self.missing: dict[str, float] = {}  # stream -> monotonic time it was flagged
        self.quiet: dict[str, float] = {}  # stream -> monotonic time of its last frame (silent, nothing due)
        self.rotations = 0
        self.rotation_failures = 0
        self.silent_drops = 0
        self.retired_reconnects = 0  # reconnects of connections since closed (rotated, emptied)
        self._rng = rng or random.Random()
        self._on_lost = on_lost or (lambda streams: None)
        self._connect = connect_fn
        self._conns: dict[str, Connection] = {}  # every running connection, replacements included
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._gate = asyncio.Semaphore(config.reconnect.max_concurrent_connects)
        self._rotating = False
        self._monitor: asyncio.Task[None] | None = None

    @property
    def refused(self) -> dict[str, str]:
        """Stream -> why the exchange refused it."""
        return self.placement.refused

    @property
    def unplaced(self) -> list[str]:
        """Streams no connection had room for (``max_connections`` binds)."""
        return self.placement.unplaced

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, streams: Iterable[str]) -> None:
        """Open the connections for ``streams`` (raises ``PlanError`` naming the config keys)."""
        await self._apply(self.placement.start(list(streams)))
        self._monitor = asyncio.create_task(self._watch(), name="pool:watch")

    async def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*(c.stop("shutdown") for c in self._conns.values()))
        await asyncio.gather(*self._tasks.values(), *self._background, return_exceptions=True)
        if self._monitor is not None:
            await asyncio.gather(self._monitor, return_exceptions=True)

    # --- streams -------------------------------------------------------------------------------

    def streams(self) -> list[str]:
        return self.placement.streams()

    def owner(self, stream: str) -> Connection | None:
        conn = self.placement.owner.get(stream)
        return None if conn is None else self._conns.get(conn)

    async def add(self, streams: Iterable[str]) -> list[str]:
        """Subscribe more streams live; return those placed (the rest are ``unplaced``)."""
        changes = self.placement.add(list(streams))
        if self.placement.unplaced:
            log.warning("%d streams fit no connection (websocket.connection_pool.max_connections): %s",
                        len(self.placement.unplaced), ", ".join(self.placement.unplaced[:5]))
        await self._apply(changes)
        return [s for c in changes if isinstance(c, (Assign, Open)) for s in c.streams]

    async def remove(self, streams: Iterable[str]) -> None:
        """Unsubscribe streams live; a connection left with none is closed."""
        streams = list(streams)
        for s in streams:
            self.missing.pop(s, None)
            self.quiet.pop(s, None)
            self.dispatcher.unroute(s)
        await self._apply(self.placement.remove(streams))

    def missing_streams(self) -> dict[str, list[str]]:
        """Streams silent while data was due (:mod:`~klinestore.ingest.liveness`), per symbol (uppercase)."""
        return _by_symbol(self.missing)

    def quiet_streams(self) -> dict[str, list[str]]:
        """Streams silent with nothing due (a quiet market), per symbol: shown, never penalised."""
        return _by_symbol(self.quiet)

    def silent_streams(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Every stream judged quiet or missing: its last frame's age (s) and the verdict."""
        now = time.monotonic() if now is None else now
        out: dict[str, dict[str, Any]] = {}
        for s in sorted({*self.missing, *self.quiet}):
            conn = self.owner(s)
            age = conn.stream_silence(s, now) if conn is not None else None
            out[s] = {"age_s": None if age is None else round(age, 1), "judged": "missing" if s in self.missing else "quiet"}
        return out

    # --- liveness and rotation -----------------------------------------------------------------

    async def check(self) -> None:
        """One liveness and rotation pass (the monitor runs it every ``heartbeat.check_interval``)."""
        hb = self.config.heartbeat
        now = time.monotonic()
        for conn in list(self.connections):
            up = conn.state == ConnState.SUBSCRIBED
            if up and now - max(conn.last_message, conn.subscribed_at) > hb.timeout:
                self.silent_drops += 1
                conn.drop(f"silent for {now - max(conn.last_message, conn.subscribed_at):.1f}s")
                up = False
            for s in conn.streams:
                silence = conn.stream_silence(s, now)
                judge = self.liveness
                if silence <= (judge.timeout_for(s) if judge is not None else hb.timeout):
                    self.missing.pop(s, None)
                    self.quiet.pop(s, None)
                    continue
                if judge is not None and not judge.expects(s, now - silence, now):
                    self.missing.pop(s, None)  # a quiet market, not a dead stream: no alarm, no resubscribe
                    self.quiet[s] = now - silence
                    continue
                self.quiet.pop(s, None)
                flagged = self.missing.setdefault(s, now)
                if flagged == now:
                    log.warning("%s: %s silent for %.1fs: missing", conn.id, s, conn.stream_silence(s, now))
                elif up and now - flagged >= hb.resubscribe_after:
                    self.missing[s] = now  # wait resubscribe_after again before the next try
                    self._background_task(self._resubscribe(conn, s))
        if not self._rotating:
            rotate_ms = self.config.rotate_after * 1000
            due = [c for c in self.connections if c.state == ConnState.SUBSCRIBED and (c.age_ms() or 0) >= rotate_ms]
            if due:
                self._rotating = True
                self._background_task(self._rotate_all(due))

    async def rotate(self, old: Connection) -> bool:
        """Replace ``old`` by a new connection with its streams; True once the new one took over."""
        plan = self.placement.begin_rotation(old.id)
        new = self._launch(plan)
        timeout = self.config.reconnect.open_timeout + self.config.control_timeout + self.config.heartbeat.timeout
        try:
            async with asyncio.timeout(timeout):
                await new.delivering.wait()
        except TimeoutError:
            self.rotation_failures += 1
            log.warning("%s: replacement %s not delivering within %.0fs; keeping the old one", old.id, new.id, timeout)
            await self._apply(self.placement.abandon_rotation(new.id, "rotation abandoned"))
            return False
        changes = self.placement.complete_rotation(new.id, f"rotated: replaced by {new.id}")
        if old in self.connections:
            self.connections[self.connections.index(old)] = new
        else:  # removed while we waited
            self.connections.append(new)
        await self._apply(changes)
        if any(isinstance(c, Retire) and c.conn_id == old.id for c in changes):
            self.rotations += 1
            return True
        return False

    # --- internals -------------------------------------------------------------------------------

    async def _apply(self, changes: list[Change]) -> None:
        """Carry out the planner's changes on real connections."""
        for change in changes:
            if isinstance(change, Open):
                for s in change.streams:
                    self.dispatcher.route(s)
                self.connections.append(self._launch(change))
            elif isinstance(change, Assign):
                for s in change.streams:
                    self.dispatcher.route(s)
                await self._conns[change.conn_id].add(change.streams)
            elif isinstance(change, Release):
                conn = self._conns.get(change.conn_id)
                if conn is not None:
                    await conn.remove(change.streams)
            elif isinstance(change, Retire):
                await self._retire(change.conn_id, change.reason)

    def _launch(self, plan: Open) -> Connection:
        path = self.config.routes.market if plan.route == Route.MARKET else self.config.routes.public
        conn = Connection(
            plan.conn_id, plan.route, stream_url(self.config.base_url, path), plan.streams, config=self.config,
            dispatcher=self.dispatcher, clock=self.clock, events=self.events, gate=self._gate,
            rng=random.Random(self._rng.random()), on_refused=self._refused, on_lost=self._lost,
            connect_fn=self._connect,
        )
        self._conns[conn.id] = conn
        self._tasks[conn.id] = asyncio.create_task(conn.run(), name=f"{conn.id}:run")
        return conn

    async def _retire(self, conn_id: str, reason: str) -> None:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        if conn in self.connections:
            self.connections.remove(conn)
        self.retired_reconnects += conn.reconnects
        await conn.stop(reason)
        task = self._tasks.pop(conn_id, None)
        if task is not None and task is not asyncio.current_task():
            await asyncio.gather(task, return_exceptions=True)

    def _refused(self, conn: Connection, streams: list[str], error: ControlError) -> None:
        too_many = error.code == ErrorCode.TOO_MANY_SUBSCRIPTIONS
        changes = self.placement.refuse(conn.id, streams, too_many=too_many, reason=f"code {error.code}: {error.msg}",
                                        holds=len(conn.subscribed))
        if too_many:
            log.warning("%s: exchange allows only %d streams here; moving %d elsewhere", conn.id,
                        self.placement.limit.get(conn.id, 0), len(streams))
        else:
            for s in streams:
                if s in self.placement.refused:
                    self.dispatcher.unroute(s)
            log.error("%s: exchange refused %d streams (code %d: %s)", conn.id, len(streams), error.code, error.msg)
        if changes:
            self._background_task(self._apply(changes))

    def _lost(self, conn: Connection) -> None:
        self._on_lost(list(conn.streams))

    async def _resubscribe(self, conn: Connection, stream: str) -> None:
        log.warning("%s: resubscribing %s (still silent)", conn.id, stream)
        try:
            await conn.resubscribe(stream)
        except Exception as exc:  # noqa: BLE001 - the connection handles its own loss; record and go on
            log.warning("%s: resubscribe of %s failed: %r", conn.id, stream, exc)

    async def _rotate_all(self, due: list[Connection]) -> None:
        try:
            for conn in due:  # one at a time: never two replacements in flight
                if conn in self.connections:
                    await self.rotate(conn)
        finally:
            self._rotating = False

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat.check_interval)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - the watchdog must outlive its bugs
                log.exception("pool check failed")

    def _background_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def status(self) -> list[dict[str, object]]:
        now = time.monotonic()
        out = []
        for c in self.connections:
            age = c.age_ms()
            out.append({
                "id": c.id, "route": c.route.value, "state": c.state.value, "streams": len(c.streams),
                "subscribed": len(c.subscribed), "retries": c.retries, "reconnects": c.reconnects,
                "last_message_age_s": round(now - c.last_message, 3) if c.last_message else None,
                "age_s": round(age / 1000, 1) if age is not None else None, "messages": c.messages,
                "resubscribes": c.resubscribes, "internal_errors": c.internal_errors,
                "control_errors": c.control_errors, "limit": self.placement.limit.get(c.id),
            })
        return out

    def reconnects(self) -> int:
        return self.retired_reconnects + sum(c.reconnects for c in self.connections)


def _by_symbol(streams: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in sorted(streams):
        out.setdefault(parse_stream(s).symbol, []).append(s)
    return out
