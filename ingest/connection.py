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

Nothing here knows Binance's payloads: frames go to the dispatcher, control replies come
back by id. Data frames are handled as the socket is read (:mod:`~klinestore.ingest.wsclient`), so no
frame waits in a user-space queue: when ingest falls behind, the socket is read later, the
kernel buffer fills and TCP pushes back on the exchange (the feed measures the event loop's
lag to make that visible). websockets' own queue, bounded by ``max_queue``, only sees
frames before a session is set up.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from klinestore.ingest.backoff import Backoff, BackoffPolicy
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.config import WebsocketConfig
from klinestore.ingest.dispatcher import Dispatcher
from klinestore.ingest.errors import ControlError
from klinestore.ingest.eventlog import EventLog
from klinestore.ingest.protocol.control import ControlReply, ErrorCode, subscribe, unsubscribe
from klinestore.ingest.protocol.events import Frame
from klinestore.ingest.protocol.streams import Route
from klinestore.ingest.throttle import LogThrottle, TokenBucket
from klinestore.ingest.wsclient import FrameConnection, Lost, describe, retryable

log = logging.getLogger(__name__)

#: Streams per SUBSCRIBE message (a 200-stream connection subscribes in 2 messages).
SUBSCRIBE_CHUNK = 100


class ConnState(enum.StrEnum):
    DISCONNECTED = "DISCONNECTED"
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    SUBSCRIBED = "SUBSCRIBED"
    LOST = "LOST"
    RECONNECTING = "RECONNECTING"
    FAILED = "FAILED"


Refused = Callable[["Connection", list[str], ControlError], None]


class Connection:
    """A routed combined-stream connection carrying up to ``max_streams_per_connection`` streams."""

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
        self.streams: dict[str, None] = dict.fromkeys(streams)  # wanted, in order
        self.subscribed: set[str] = set()
        self.last_seen: dict[str, float] = {}  # stream -> monotonic time of its last frame
        self.state = ConnState.DISCONNECTED
        self.retries = 0  # attempts in the current episode
        self.reconnects = 0  # sessions subscribed again after a loss
        self.messages = 0
        self.control_errors = 0
        self.unmatched_replies = 0
        self.resubscribes = 0
        self.opened_ms: int | None = None  # exchange time the current session opened
        self.subscribed_at = time.monotonic()  # of the current session (creation until the first)
        self.last_message = 0.0  # monotonic
        self.internal_errors = 0
        self.subscribed_event = asyncio.Event()
        self.delivering = asyncio.Event()  # set by the first data frame of a subscribed session
        self._awaiting_delivery = False
        self._dispatcher = dispatcher
        self._clock = clock
        self._events = events
        self._gate = gate
        self._rng = rng or random.Random()
        self._policy = BackoffPolicy.from_config(config.reconnect)
        self._backoff = Backoff(self._policy, rng=self._rng)
        self._reset_at: float | None = None  # monotonic time sustained delivery ends the retry episode
        self._on_refused = on_refused or (lambda conn, streams, error: None)
        self._on_lost = on_lost or (lambda conn: None)
        self._connect = connect_fn
        self._ws: FrameConnection | None = None
        self._pending: dict[int, asyncio.Future[ControlReply]] = {}
        self._next_id = 0
        self._bucket = TokenBucket(config.control_messages_per_second)
        self._wake = asyncio.Event()
        self._stopping = False
        self._stop_reason = "stopped"
        self._drop_reason: str | None = None
        self._throttle = LogThrottle(log)

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe, receive; on loss retry with backoff; FAILED waits and starts over."""
        backoff = self._backoff
        reason = "start"
        lost_before = False
        while not self._stopping:
            self._set(ConnState.CONNECTING, reason if reason in ("start", "after FAILED") else f"retry {backoff.attempts}")
            try:
                async with self._gate:
                    if self._stopping:
                        break
                    ws = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified by retryable()
                reason = describe(exc)
                if not retryable(exc):
                    await self._fail(backoff, reason)
                    reason = "after FAILED"
                    continue
            else:
                if self._stopping:
                    await self._close_ws(ws)
                    break
                self._set(ConnState.CONNECTED, "handshake done")
                try:
                    await self._session(ws, lost_before)
                    reason = "closed"
                except Lost as lost:
                    reason = self._drop_reason or str(lost)
                except ConnectionClosed as exc:
                    reason = self._drop_reason or describe(exc)
                except Exception as exc:  # noqa: BLE001 - a bug must cost a reconnect, never the connection
                    log.exception("%s: session failed", self.id)
                    reason = f"internal error: {describe(exc)}"
                finally:
                    await self._close_ws(ws)
                if self._stopping:
                    break
                lost_before = True
                self._set(ConnState.LOST, reason)
                self._on_lost(self)
            delay = backoff.next_delay()
            self.retries = backoff.attempts
            if delay is None:
                await self._fail(backoff, f"{self._policy.max_retries} retries spent; last: {reason}")
                reason = "after FAILED"
                continue
            self._set(ConnState.RECONNECTING, f"retry {backoff.attempts}/{self._policy.max_retries} in {delay:.2f}s: {reason}")
            await self._sleep(delay)
        self._set(ConnState.DISCONNECTED, self._stop_reason)

    async def stop(self, reason: str = "stopped") -> None:
        """Close for good (rotation, shutdown, no streams left); ``run`` returns."""
        self._stopping = True
        self._stop_reason = reason
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
        new = [s for s in streams if s not in self.streams]
        self.streams.update(dict.fromkeys(new))
        if new and self.state == ConnState.SUBSCRIBED:
            await self._live(self._subscribe(new))

    async def remove(self, streams: Iterable[str]) -> None:
        gone = [s for s in streams if s in self.streams]
        for s in gone:
            del self.streams[s]
            self.last_seen.pop(s, None)
        live = [s for s in gone if s in self.subscribed]
        self.subscribed.difference_update(gone)
        if live and self.state == ConnState.SUBSCRIBED:
            for chunk in _chunks(live):
                await self._live(self._request(unsubscribe, chunk))

    async def resubscribe(self, stream: str) -> None:
        """UNSUBSCRIBE then SUBSCRIBE one silent stream, on this connection, without reconnecting.

        Its silence keeps counting from its last frame: a stream is missing (and costs DataQual)
        until it delivers again, not merely until it was asked to.
        """
        if self.state != ConnState.SUBSCRIBED or stream not in self.streams:
            return
        self.resubscribes += 1
        await self._live(self._request(unsubscribe, [stream]))
        self.subscribed.discard(stream)
        await self._live(self._subscribe([stream]))

    async def _live(self, request: Awaitable[Any]) -> None:
        """A control request on a running session: if the session breaks meanwhile, the wanted
        streams are subscribed again on reconnect; a request left unanswered drops the session."""
        try:
            await request
        except Lost as exc:
            self.drop(str(exc))
        except ConnectionClosed:
            pass

    def stream_silence(self, stream: str, now: float) -> float:
        """Seconds since ``stream`` last delivered (since SUBSCRIBED if it never did)."""
        return now - self.last_seen.get(stream, self.subscribed_at)

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

    async def _session(self, ws: FrameConnection, lost_before: bool) -> None:
        self._ws = ws
        self._drop_reason = None
        self.opened_ms = self._clock.now_ms()
        self.subscribed.clear()
        receiving = asyncio.create_task(self._receive(ws), name=f"{self.id}:receive")
        subscribing = asyncio.create_task(self._subscribe_all(), name=f"{self.id}:subscribe")
        try:
            done, _ = await asyncio.wait({receiving, subscribing}, return_when=asyncio.FIRST_COMPLETED)
            if subscribing not in done:
                receiving.result()  # the connection ended while subscribing: raises why
                raise Lost("closed while subscribing")
            exc = subscribing.exception()
            if exc is not None:
                raise Lost(f"subscribe failed: {describe(exc)}")
            self.subscribed_at = time.monotonic()
            self._set(ConnState.SUBSCRIBED, f"{len(self.subscribed)} streams")
            # No backoff reset here: an exchange that acknowledges and then drops would be hammered
            # at the base delay for ever. The episode ends after reset_after seconds of data.
            self._reset_at = self.subscribed_at + self.config.reconnect.reset_after
            if lost_before:
                self.reconnects += 1
            self.subscribed_event.set()
            self._awaiting_delivery = True
            await receiving
        finally:
            for task in (receiving, subscribing):
                task.cancel()
            await asyncio.gather(receiving, subscribing, return_exceptions=True)
            for fut in self._pending.values():
                if not fut.done():
                    fut.cancel()
            self._pending.clear()
            self._ws = None
            self.subscribed_event.clear()
            self.delivering.clear()
            self._awaiting_delivery = False
            self._reset_at = None

    async def _receive(self, ws: FrameConnection) -> None:
        """Frames are handled by ``_on_frame`` as they arrive; this waits for the end and raises why."""
        ws.on_frame = self._on_frame
        ws.coalesce = self.config.read_coalesce
        await ws.wait_closed()
        raise ws.protocol.close_exc

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
            self._on_reply(frame)
            return
        self.last_seen[stream] = now
        if self._reset_at is not None and now >= self._reset_at:
            self._reset_at = None
            self._backoff.reset()
            self.retries = 0
        if self._awaiting_delivery:
            self._awaiting_delivery = False
            self.delivering.set()

    async def _subscribe_all(self) -> None:
        while True:
            todo = [s for s in self.streams if s not in self.subscribed]
            if not todo:
                return
            await self._subscribe(todo)

    async def _subscribe(self, streams: list[str]) -> None:
        chunks = _chunks(streams)
        for i, chunk in enumerate(chunks):
            try:
                await self._request(subscribe, chunk)
            except ControlError as exc:
                self.control_errors += 1
                # "Too many subscriptions" (code 4) refuses the rest too (the exchange closes the
                # connection); any other error refuses only the chunk it answered: the later
                # chunks were never sent and are asked for still.
                too_many = exc.code == ErrorCode.TOO_MANY_SUBSCRIPTIONS
                refused = [s for c in chunks[i:] for s in c] if too_many else chunk
                for s in refused:
                    self.streams.pop(s, None)
                self._on_refused(self, refused, exc)
                if too_many:
                    return
                continue
            self.subscribed.update(chunk)

    async def _request(self, build: Callable[[list[str], int], bytes], streams: list[str]) -> Any:
        ws = self._ws
        if ws is None:
            raise Lost("not connected")
        wait = self._bucket.take()
        if wait > 0:
            await asyncio.sleep(wait)
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[ControlReply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await ws.send(build(streams, request_id), text=True)
            async with asyncio.timeout(self.config.control_timeout):
                reply = await future
        except TimeoutError:
            raise Lost(f"no reply to request {request_id} within {self.config.control_timeout}s") from None
        finally:
            self._pending.pop(request_id, None)
        return reply.raise_for_error()

    def _on_reply(self, frame: Frame) -> None:
        reply = ControlReply.from_frame(frame)
        future = self._pending.get(reply.id) if isinstance(reply.id, int) else None
        if future is None or future.done():
            self.unmatched_replies += 1
            self._throttle.warning(f"{self.id}:reply", "%s: reply to no pending request: %r", self.id, reply)
            return
        future.set_result(reply)

    async def _fail(self, backoff: Backoff, reason: str) -> None:
        self._set(ConnState.FAILED, reason)
        await self._sleep(self.config.reconnect.failed_retry_interval)
        backoff.reset()
        self.retries = 0

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

    def _set(self, state: ConnState, reason: str) -> None:
        previous = self.state
        self.state = state
        self._events.record(self.id, previous.value, state.value, reason)
        level = logging.INFO if state in (ConnState.SUBSCRIBED, ConnState.CONNECTING, ConnState.CONNECTED) else logging.WARNING
        if state == ConnState.DISCONNECTED:
            level = logging.INFO
        log.log(level, "%s %s -> %s: %s", self.id, previous.value, state.value, reason)


def _chunks(streams: list[str]) -> list[list[str]]:
    return [streams[i : i + SUBSCRIBE_CHUNK] for i in range(0, len(streams), SUBSCRIBE_CHUNK)]
