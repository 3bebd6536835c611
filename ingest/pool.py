"""The connection pool: which stream rides which connection, liveness, and 24 h rotation.

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
from klinestore.ingest.protocol.control import ErrorCode
from klinestore.ingest.protocol.streams import Route, parse_stream
from klinestore.ingest.protocol.urls import EXCHANGE_MAX_STREAMS, plan_connections, stream_url

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
        self.connections: list[Connection] = []
        self.refused: dict[str, str] = {}  # stream -> why the exchange refused it
        self.unplaced: list[str] = []  # streams no connection had room for
        self.missing: dict[str, float] = {}  # stream -> monotonic time it was flagged
        self.quiet: dict[str, float] = {}  # stream -> monotonic time of its last frame (silent, nothing due)
        self.rotations = 0
        self.rotation_failures = 0
        self.silent_drops = 0
        self.retired_reconnects = 0  # reconnects of connections since closed (rotated, emptied)
        self._rng = rng or random.Random()
        self._on_lost = on_lost or (lambda streams: None)
        self._connect = connect_fn
        self._owner: dict[str, Connection] = {}
        self._limit: dict[str, int] = {}  # connection id -> streams it may carry
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._gate = asyncio.Semaphore(config.reconnect.max_concurrent_connects)
        self._next_id = 0
        self._rotating = False
        self._monitor: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, streams: Iterable[str]) -> None:
        """Open the connections for ``streams`` (raises ``PlanError`` naming the config keys)."""
        pool = self.config.connection_pool
        for plan in plan_connections(streams, pool.max_streams_per_connection, pool.max_connections):
            for s in plan.streams:
                self.dispatcher.route(s)
            self._spawn(plan.route, plan.streams)
        self._monitor = asyncio.create_task(self._watch(), name="pool:watch")

    async def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*(c.stop("shutdown") for c in self.connections))
        await asyncio.gather(*self._tasks.values(), *self._background, return_exceptions=True)
        if self._monitor is not None:
            await asyncio.gather(self._monitor, return_exceptions=True)

    # --- streams -------------------------------------------------------------------------------

    def streams(self) -> list[str]:
        return list(self._owner)

    def owner(self, stream: str) -> Connection | None:
        return self._owner.get(stream)

    async def add(self, streams: Iterable[str]) -> list[str]:
        """Subscribe more streams live; return those placed.

        A stream goes to the least-loaded connection of its route under the preferred size,
        else to a new connection while ``max_connections`` allows, else to the least-loaded
        one under the exchange's limit; only then is it ``unplaced``.
        """
        groups: dict[str, list[str]] = {}
        fresh: dict[Route, list[str]] = {}
        prefer = self.config.connection_pool.max_streams_per_connection
        for s in dict.fromkeys(streams):
            if s in self._owner:
                continue
            route = parse_stream(s).route
            conn = self._least_loaded(route, prefer, groups)
            if conn is not None:
                self._owner[s] = conn
                groups.setdefault(conn.id, []).append(s)
            else:
                fresh.setdefault(route, []).append(s)
        spawn: list[tuple[Route, list[str]]] = []
        for route, names in fresh.items():
            while names and self._may_open(len(spawn)):
                spawn.append((route, names[:prefer]))
                names = names[prefer:]
            for i, s in enumerate(names):
                conn = self._least_loaded(route, EXCHANGE_MAX_STREAMS, groups)
                if conn is None:
                    self.unplaced.extend(n for n in names[i:] if n not in self.unplaced)
                    log.warning("%d streams fit no connection (websocket.connection_pool.max_connections): %s",
                                len(names) - i, ", ".join(names[i : i + 5]))
                    break
                self._owner[s] = conn
                groups.setdefault(conn.id, []).append(s)
        placed: list[str] = []
        for names in groups.values():
            conn = self._owner[names[0]]
            for s in names:
                self.dispatcher.route(s)
            await conn.add(names)
            placed.extend(names)
        for route, batch in spawn:
            for s in batch:
                self.dispatcher.route(s)
            self._spawn(route, batch)
            placed.extend(batch)
        return placed

    async def remove(self, streams: Iterable[str]) -> None:
        """Unsubscribe streams live; a connection left with none is closed."""
        groups: dict[str, list[str]] = {}
        for s in streams:
            self.unplaced = [u for u in self.unplaced if u != s]
            self.missing.pop(s, None)
            self.quiet.pop(s, None)
            conn = self._owner.pop(s, None)
            self.dispatcher.unroute(s)
            if conn is not None:
                groups.setdefault(conn.id, []).append(s)
        for conn in list(self.connections):
            names = groups.get(conn.id)
            if not names:
                continue
            await conn.remove(names)
            if not conn.streams:
                await self._retire(conn, "no streams left")

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
            conn = self._owner.get(s)
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
        new = self._make(old.route, list(old.streams))
        self._tasks[new.id] = asyncio.create_task(new.run(), name=f"{new.id}:run")
        timeout = self.config.reconnect.open_timeout + self.config.control_timeout + self.config.heartbeat.timeout
        try:
            async with asyncio.timeout(timeout):
                await new.delivering.wait()
        except TimeoutError:
            self.rotation_failures += 1
            log.warning("%s: replacement %s not delivering within %.0fs; keeping the old one", old.id, new.id, timeout)
            await new.stop("rotation abandoned")
            await self._tasks.pop(new.id)
            return False
        if old not in self.connections:  # removed while we waited
            await new.stop("rotation obsolete")
            return False
        extra = [s for s in old.streams if s not in new.streams]
        gone = [s for s in new.streams if s not in old.streams]
        self.connections[self.connections.index(old)] = new
        self._limit[new.id] = self._limit.pop(old.id, EXCHANGE_MAX_STREAMS)
        # The old connection's streams are the pool's truth: a stream removed while the
        # replacement came up (a delisting) is dropped from it, never re-owned.
        if gone:
            await new.remove(gone)
        for s in old.streams:
            if self._owner.get(s) is old:
                self._owner[s] = new
        if extra:
            await new.add(extra)
        self.rotations += 1
        self.retired_reconnects += old.reconnects
        await old.stop(f"rotated: replaced by {new.id}")
        await self._tasks.pop(old.id)
        return True

    # --- internals -------------------------------------------------------------------------------

    def _make(self, route: Route, streams: list[str]) -> Connection:
        conn_id = f"{route.value}-{self._next_id}"
        self._next_id += 1
        path = self.config.routes.market if route == Route.MARKET else self.config.routes.public
        return Connection(
            conn_id, route, stream_url(self.config.base_url, path), streams, config=self.config,
            dispatcher=self.dispatcher, clock=self.clock, events=self.events, gate=self._gate,
            rng=random.Random(self._rng.random()), on_refused=self._refused, on_lost=self._lost,
            connect_fn=self._connect,
        )

    def _spawn(self, route: Route, streams: Iterable[str]) -> Connection:
        conn = self._make(route, list(streams))
        self.connections.append(conn)
        self._limit[conn.id] = EXCHANGE_MAX_STREAMS  # lowered if the exchange says less (code 4)
        for s in conn.streams:
            self._owner[s] = conn
        self._tasks[conn.id] = asyncio.create_task(conn.run(), name=f"{conn.id}:run")
        return conn

    def _least_loaded(self, route: Route, cap: int, pending: dict[str, list[str]] | None = None) -> Connection | None:
        """The route's emptiest connection holding fewer than ``cap`` streams and under its own limit
        (counting ``pending``, streams assigned and not yet added)."""
        pending = pending or {}
        candidates = [(len(c.streams) + len(pending.get(c.id, ())), c) for c in self.connections if c.route == route]
        fits = [(n, c) for n, c in candidates if n < min(cap, self._limit[c.id])]
        return min(fits, key=lambda nc: nc[0], default=(0, None))[1]

    def _may_open(self, planned: int) -> bool:
        bound = self.config.connection_pool.max_connections
        return bound is None or len(self.connections) + planned < bound

    async def _retire(self, conn: Connection, reason: str) -> None:
        self.connections.remove(conn)
        self.retired_reconnects += conn.reconnects
        await conn.stop(reason)
        task = self._tasks.pop(conn.id, None)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def _refused(self, conn: Connection, streams: list[str], error: ControlError) -> None:
        for s in streams:
            if self._owner.get(s) is conn:
                del self._owner[s]
        if error.code == ErrorCode.TOO_MANY_SUBSCRIPTIONS:
            self._limit[conn.id] = max(1, len(conn.subscribed))
            log.warning("%s: exchange allows only %d streams here; moving %d elsewhere", conn.id,
                        self._limit[conn.id], len(streams))
            self._background_task(self.add(streams))
            return
        for s in streams:
            self.refused[s] = f"code {error.code}: {error.msg}"
            self.dispatcher.unroute(s)
        log.error("%s: exchange refused %d streams (code %d: %s)", conn.id, len(streams), error.code, error.msg)

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
                "control_errors": c.control_errors, "limit": self._limit.get(c.id),
            })
        return out

    def reconnects(self) -> int:
        return self.retired_reconnects + sum(c.reconnects for c in self.connections)


def _by_symbol(streams: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in sorted(streams):
        out.setdefault(parse_stream(s).symbol, []).append(s)
    return out
