"""One WebSocket connection: its state machine, subscriptions, control requests and receive loop.

States (seed v6.4 §2.2), every transition recorded in the :class:`~klinestore.ingest.eventlog.EventLog`::

    DISCONNECTED → CONNECTING → CONNECTED → SUBSCRIBED
                       │             │           │  close, reset, ping timeout, silence
                       ▼             ▼           ▼
                  RECONNECTING ◀─── LOST ◀──────┘
                       │  retries of the episode spent (or an error retrying cannot fix)
                       ▼
                     FAILED ──(failed_retry_interval)──▶ CONNECTING

The connection opens the route's bare combined URL (``<base>/market/stream``), SUBSCRIBEs
its streams in chunks (SUBSCRIBED once every chunk is acknowledged), and then only
receives. Control messages go through a token bucket (``control_messages_per_second``;
the exchange closes a connection at 10). Liveness: websockets' keepalive pings
(``ping.interval``/``ping.timeout``) catch a dead peer; ``heartbeat.timeout`` of total
silence (checked by the pool) catches a live peer that stopped sending.

The control protocol (chunking, request ids, replies, refusals, states, backoff) is the pure
:class:`~klinestore.ingest.session.Session`; this module is the asyncio glue that feeds it
frames and timer ticks and performs its actions on a websockets connection.

Nothing here knows Binance's payloads: frames go to the dispatcher, control replies come
back by id. Data frames are handled as the socket is read (:mod:`~klinestore.ingest.wsclient`), so no
frame waits in a user-space queue: when ingest falls behind, the socket is read later, the
kernel buffer fills and TCP pushes back on the exchange (the feed measures the event loop's
lag to make that visible). websockets' own queue, bounded by ``max_queue``, only sees
frames before a session is set up.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.config import WebsocketConfig
from klinestore.ingest.dispatcher import Dispatcher
from klinestore.ingest.errors import ControlError
from klinestore.ingest.eventlog import EventLog
from klinestore.ingest.protocol.control import ControlReply
from klinestore.ingest.protocol.streams import Route
from klinestore.ingest.session import Action, ConnState, Drop, Refuse, Send, Session, Sleep, Transition
from klinestore.ingest.throttle import LogThrottle
from klinestore.ingest.wsclient import FrameConnection, describe, retryable

__all__ = ["Connection", "ConnState", "Refused"]

log = logging.getLogger(__name__)

Refused = Callable[["Connection", list[str], ControlError], None]



def _from_session(name: str) -> Any:
    """A read-only attribute of the connection that is its session's (the sans-I/O state)."""
    return property(lambda self: getattr(self.session, name), doc=f"The session's ``{name}``.")


class Connection:
    """A routed combined-stream connection: a :class:`Session` driven over a websockets socket."""

    def __init__(
        self,
        conn_id: str,
        route: Route,
        url: str,
        streams: Iterable[str],
        *,
        config: WebsocketConfig,
        dispatcher: Dispatcher,
        clock: ExchangeClock,
        events: EventLog,
        gate: asyncio.Semaphore,
        rng: random.Random | None = None,
        on_refused: Refused | None = None,
        on_lost: Callable[[Connection], None] | None = None,
        connect_fn: Callable[..., Any] = connect,
    ) -> None:
        self.id = conn_id
        self.route = route
        self.url = url
        self.config = config
        self.session = Session(config, list(streams), rng=rng or random.Random())
        self.session.subscribed_at = time.monotonic()  # silence counts from creation until the first session
        self.messages = 0
        self.internal_errors = 0
        self.opened_ms: int | None = None  # exchange time the current session opened
        self.last_message = 0.0  # monotonic
        self.subscribed_event = asyncio.Event()
        self.delivering = asyncio.Event()  # set by the first data frame of a subscribed session
        self._dispatcher = dispatcher
        self._clock = clock
        self._events = events
        self._gate = gate
        self._on_refused = on_refused or (lambda conn, streams, error: None)
        self._on_lost = on_lost or (lambda conn: None)
        self._connect = connect_fn
        self._ws: FrameConnection | None = None
        self._wake = asyncio.Event()  # stop() ends a sleep
        self._timer_wake = asyncio.Event()  # the session's next deadline may have moved
        self._sends: set[asyncio.Task[None]] = set()
        self._drop_reason: str | None = None
        self._throttle = LogThrottle(log)

    # --- the session's view ----------------------------------------------------------------------

    streams: dict[str, None] = _from_session("streams")
    subscribed: set[str] = _from_session("subscribed")
    last_seen: dict[str, float] = _from_session("last_seen")
    state: ConnState = _from_session("state")
    retries: int = _from_session("retries")
    reconnects: int = _from_session("reconnects")
    control_errors: int = _from_session("control_errors")
    unmatched_replies: int = _from_session("unmatched_replies")
    resubscribes: int = _from_session("resubscribes")
    subscribed_at: float = _from_session("subscribed_at")

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe, receive; on loss sleep as the session says and try again."""
        session = self.session
        reason = "start"
        while not session.stopping:
            self._perform(session.connecting(time.monotonic(), reason))
            try:
                async with self._gate:
                    if session.stopping:
                        break
                    ws = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified by retryable()
                actions = session.open_failed(time.monotonic(), describe(exc), retryable(exc))
            else:
                if session.stopping:
                    await self._close_ws(ws)
                    break
                try:
                    why = await self._session(ws)
                except Exception as exc:  # noqa: BLE001 - a bug must cost a reconnect, never the connection
                    log.exception("%s: session failed", self.id)
                    why = f"internal error: {describe(exc)}"
                finally:
                    await self._close_ws(ws)
                if session.stopping:
                    break
                actions = session.closed(time.monotonic(), why)
            reason = "after FAILED" if session.state == ConnState.FAILED else "retry"
            await self._perform_async(actions)
        self._perform(session.finished())

    async def stop(self, reason: str = "stopped") -> None:
        """Close for good (rotation, shutdown, no streams left); ``run`` returns."""
        self.session.stop(reason)
        self._wake.set()
        ws = self._ws
        if ws is not None:
            await self._close_ws(ws)

    def drop(self, reason: str) -> None:
        """Abandon the current session (silence, a stuck peer); ``run`` reconnects."""
        ws = self._ws
        if ws is not None and self._drop_reason is None:
            self._drop_reason = reason
            ws.transport.abort()

    # --- subscriptions -------------------------------------------------------------------------

    async def add(self, streams: Iterable[str]) -> None:
        """Carry more streams: subscribed now if the session is up, else on the next connect."""
        self._perform(self.session.add(list(streams), time.monotonic()))

    async def remove(self, streams: Iterable[str]) -> None:
        self._perform(self.session.remove(list(streams), time.monotonic()))

    async def resubscribe(self, stream: str) -> None:
        """UNSUBSCRIBE then SUBSCRIBE one silent stream, on this connection, without reconnecting.

        Its silence keeps counting from its last frame: a stream is missing (and costs DataQual)
        until it delivers again, not merely until it was asked to.
        """
        self._perform(self.session.resubscribe(stream, time.monotonic()))

    def stream_silence(self, stream: str, now: float) -> float:
        """Seconds since ``stream`` last delivered (since SUBSCRIBED if it never did)."""
        return self.session.silence(stream, now)

    def age_ms(self) -> int | None:
        """Exchange time since the current session opened."""
        now = self._clock.now_ms()
        return None if now is None or self.opened_ms is None else now - self.opened_ms

    # --- internals -------------------------------------------------------------------------------

    async def _open(self) -> FrameConnection:
        ws: FrameConnection = await self._connect(
            self.url,
            open_timeout=self.config.reconnect.open_timeout,
            ping_interval=self.config.ping.interval,
            ping_timeout=self.config.ping.timeout,
            close_timeout=min(2.0, self.config.ping.timeout),
            max_queue=self.config.max_queue,
            compression=None,  # Binance does not compress; inflating every frame would cost CPU
            proxy=None,
            create_connection=FrameConnection,
        )
        return ws

    async def _session(self, ws: FrameConnection) -> str:
        """Run one session until the socket closes; return why it ended."""
        self._ws = ws
        self._drop_reason = None
        self.opened_ms = self._clock.now_ms()
        ws.on_frame = self._on_frame
        ws.coalesce = self.config.read_coalesce
        timers = asyncio.create_task(self._timers(), name=f"{self.id}:timers")
        try:
            self._perform(self.session.opened(time.monotonic()))
            await ws.wait_closed()
        finally:
            timers.cancel()
            await asyncio.gather(timers, *self._sends, return_exceptions=True)
            self._ws = None
            self.subscribed_event.clear()
            self.delivering.clear()
        if self._drop_reason is not None:
            return self._drop_reason
        return describe(ws.protocol.close_exc)

    async def _timers(self) -> None:
        """Tick the session at its next deadline (a reply overdue, a queued request's token)."""
        while True:
            deadline = self.session.next_deadline()
            self._timer_wake.clear()
            if deadline is None:
                await self._timer_wake.wait()
                continue
            delay = deadline - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._timer_wake.wait(), delay)
                    continue
                except TimeoutError:
                    pass
            self._perform(self.session.tick(time.monotonic()))

    def _on_frame(self, raw: bytes) -> None:
        now = time.monotonic()
        self.last_message = now
        self.messages += 1
        try:
            frame = self._dispatcher.dispatch(raw, now)
        except Exception:  # noqa: BLE001 - one bad frame must not end the session
            self.internal_errors += 1
            self._throttle.log(logging.ERROR, f"{self.id}:internal", "%s: frame handling failed", self.id, exc_info=True)
            return
        if frame is None:
            return
        stream = frame.stream
        if stream is None:
            reply = ControlReply.from_frame(frame)
            unmatched = self.session.unmatched_replies
            self._perform(self.session.reply(reply, now))
            if self.session.unmatched_replies != unmatched:
                self._throttle.warning(f"{self.id}:reply", "%s: reply to no pending request: %r", self.id, reply)
            return
        if self.session.data(stream, now):
            self.delivering.set()

    def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                ws = self._ws
                if ws is not None:
                    task = asyncio.ensure_future(self._send(ws, action.data))
                    self._sends.add(task)
                    task.add_done_callback(self._sends.discard)
            elif isinstance(action, Transition):
                self._transition(action)
            elif isinstance(action, Refuse):
                self._on_refused(self, action.streams, action.error)
            elif isinstance(action, Drop):
                self.drop(action.reason)
        self._timer_wake.set()

    async def _perform_async(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Sleep):
                await self._sleep(action.seconds)
            else:
                self._perform([action])

    async def _send(self, ws: FrameConnection, data: bytes) -> None:
        try:
            await ws.send(data, text=True)
        except Exception:  # noqa: BLE001 - a send on a closing socket: the session's end says why
            pass

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def _close_ws(self, ws: ClientConnection) -> None:
        try:
            await ws.close()
        except Exception:  # noqa: BLE001 - closing a broken socket may fail in many ways; it is closed either way
            ws.transport.abort()

    def _transition(self, change: Transition) -> None:
        state = change.state
        self._events.record(self.id, change.previous.value, state.value, change.reason)
        if state == ConnState.SUBSCRIBED:
            self.subscribed_event.set()
        level = logging.INFO if state in (ConnState.SUBSCRIBED, ConnState.CONNECTING, ConnState.CONNECTED,
                                          ConnState.DISCONNECTED) else logging.WARNING
        log.log(level, "%s %s -> %s: %s", self.id, change.previous.value, state.value, change.reason)
        if state == ConnState.LOST:
            self._on_lost(self)
