"""The control protocol of one connection, sans I/O: fed events and times, it returns actions.

Like python-websockets' protocol objects, :class:`Session` owns no socket and no clock. The
asyncio layer (:mod:`~klinestore.ingest.connection`) tells it what happened (``connecting``,
``opened``, ``reply``, ``data``, ``closed``, ``tick``) with the monotonic time, and performs
what it returns: :class:`Send` a control request, :class:`Drop` the session, :class:`Sleep`
before the next attempt, :class:`Refuse` streams to the pool. State changes are recorded as
:class:`Transition` actions so the glue logs them in order.

What it decides:

* **Chunking and pacing**: wanted streams are SUBSCRIBEd in chunks of ``SUBSCRIBE_CHUNK``, one
  request in flight at a time, each under the control-message token bucket (the exchange
  closes a connection at 10 incoming messages a second).
* **Replies**: by request id; an error refuses only the chunk it answered, except "too many
  subscriptions" (code 4), which refuses that chunk and every queued SUBSCRIBE (the exchange
  closes the connection). A request unanswered within ``control_timeout`` drops the session.
* **State**: CONNECTING → CONNECTED → SUBSCRIBED once nothing wanted is left unsubscribed;
  LOST → RECONNECTING with the backoff's delay, or FAILED once the episode's retries are spent.
* **Backoff reset**: only after ``reconnect.reset_after`` seconds of data in one session, never
  on a SUBSCRIBE acknowledgement (a server that accepts and then drops backs off to the cap).
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass

from klinestore.ingest.backoff import Backoff, BackoffPolicy
from klinestore.ingest.config import WebsocketConfig
from klinestore.ingest.errors import ControlError
from klinestore.ingest.protocol.control import ControlReply, ErrorCode, subscribe, unsubscribe

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


@dataclass(frozen=True, slots=True)
class Send:
    """Send this control request (text frame)."""

    data: bytes
    request_id: int


@dataclass(frozen=True, slots=True)
class Drop:
    """Abandon the current session (the glue aborts the socket; ``closed`` follows)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this long, then call ``connecting`` for the next attempt."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Transition:
    previous: ConnState
    state: ConnState
    reason: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """The exchange refused these streams; they are no longer wanted here."""

    streams: list[str]
    error: ControlError


Action = Send | Drop | Sleep | Transition | Refuse


@dataclass(slots=True)
class _Op:
    method: str  # "SUBSCRIBE" | "UNSUBSCRIBE"
    streams: list[str]


class Session:
    """One connection's control protocol across its sessions and retry episodes."""

    def __init__(self, config: WebsocketConfig, streams: list[str] | tuple[str, ...], *,
                 rng: random.Random | None = None, chunk: int | None = None) -> None:
        self.config = config
        self.streams: dict[str, None] = dict.fromkeys(streams)  # wanted, in order
        self.subscribed: set[str] = set()
        self.last_seen: dict[str, float] = {}  # stream -> monotonic time of its last frame
        self.state = ConnState.DISCONNECTED
        self.retries = 0
        self.reconnects = 0
        self.control_errors = 0
        self.unmatched_replies = 0
        self.resubscribes = 0
        self.subscribed_at = 0.0
        self.stopping = False
        self._stop_reason = "stopped"
        self.chunk = chunk or SUBSCRIBE_CHUNK
        self._policy = BackoffPolicy.from_config(config.reconnect)
        self._backoff = Backoff(self._policy, rng=rng or random.Random())
        self._rate = config.control_messages_per_second
        self._tokens = 1.0  # burst of one: evenly paced, so any second holds at most rate + 1 requests
        self._tokens_at = 0.0
        self._queue: deque[_Op] = deque()
        self._pending: tuple[int, _Op, float] | None = None  # request id, op, deadline
        self._next_id = 0
        self._reset_at: float | None = None
        self._awaiting_delivery = False
        self._lost_before = False
        self._failed = False

    # --- the connection's life -------------------------------------------------------------------

    def connecting(self, now: float, reason: str = "start") -> list[Action]:
        if self._failed:
            self._failed = False
            self._backoff.reset()
            self.retries = 0
        if reason not in ("start", "after FAILED"):
            reason = f"retry {self._backoff.attempts}"
        return [self._set(ConnState.CONNECTING, reason)]

    def opened(self, now: float) -> list[Action]:
        """Handshake done: SUBSCRIBE every wanted stream."""
        self.subscribed.clear()
        self._queue.clear()
        self._pending = None
        self._tokens_at = now
        self._tokens = 1.0
        actions: list[Action] = [self._set(ConnState.CONNECTED, "handshake done")]
        self._queue_subscribe(list(self.streams))
        return actions + self._pump(now)

    def open_failed(self, now: float, reason: str, retryable: bool) -> list[Action]:
        if not retryable:
            return self._fail(reason)
        return self._retry(reason)

    def closed(self, now: float, reason: str) -> list[Action]:
        """The session ended (closed by either side, reset, ping timeout, a drop)."""
        self._queue.clear()
        self._pending = None
        self._reset_at = None
        self._awaiting_delivery = False
        self.subscribed.clear()
        if self.stopping:
            return []
        self._lost_before = True
        return [self._set(ConnState.LOST, reason), *self._retry(reason)]

    def stop(self, reason: str) -> None:
        """Close for good; the glue ends its loop and calls ``finished``."""
        if not self.stopping:
            self.stopping = True
            self._stop_reason = reason

    def finished(self) -> list[Action]:
        return [self._set(ConnState.DISCONNECTED, self._stop_reason)]

    # --- frames and timers -----------------------------------------------------------------------

    def data(self, stream: str, now: float) -> bool:
        """A data frame of ``stream``; True for the first frame of a subscribed session."""
        self.last_seen[stream] = now
        if self._reset_at is not None and now >= self._reset_at:
            self._reset_at = None
            self._backoff.reset()
            self.retries = 0
        if self._awaiting_delivery:
            self._awaiting_delivery = False
            return True
        return False

    def reply(self, reply: ControlReply, now: float) -> list[Action]:
        pending = self._pending
        if pending is None or reply.id != pending[0]:
            self.unmatched_replies += 1
            return []
        self._pending = None
        op = pending[1]
        actions: list[Action] = []
        if reply.error is None:
            if op.method == "SUBSCRIBE":
                self.subscribed.update(s for s in op.streams if s in self.streams)
        elif op.method == "SUBSCRIBE":
            self.control_errors += 1
            refused = list(op.streams)
            if reply.error.code == ErrorCode.TOO_MANY_SUBSCRIPTIONS:
                # The exchange closes the connection: every queued SUBSCRIBE is refused here too.
                for queued in [q for q in self._queue if q.method == "SUBSCRIBE"]:
                    refused += queued.streams
                    self._queue.remove(queued)
            refused = [s for s in dict.fromkeys(refused) if s in self.streams]
            for s in refused:
                del self.streams[s]
            actions.append(Refuse(refused, reply.error))
        else:
            self.control_errors += 1
        return actions + self._pump(now)

    def tick(self, now: float) -> list[Action]:
        """Timers: a control request past its deadline, queued requests whose token is ready."""
        if self._pending is not None and now >= self._pending[2]:
            request_id = self._pending[0]
            self._pending = None
            return [Drop(f"no reply to request {request_id} within {self.config.control_timeout}s")]
        return self._pump(now)

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do (None: nothing until the next event)."""
        if self._pending is not None:
            return self._pending[2]
        if self._queue and self.live:
            return self._tokens_at + max(0.0, 1.0 - self._tokens) / self._rate
        return None

    # --- subscriptions ---------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.state in (ConnState.CONNECTED, ConnState.SUBSCRIBED)

    def add(self, streams: list[str], now: float) -> list[Action]:
        new = [s for s in dict.fromkeys(streams) if s not in self.streams]
        self.streams.update(dict.fromkeys(new))
        if not new or not self.live:
            return []
        self._queue_subscribe(new)
        return self._pump(now)

    def remove(self, streams: list[str], now: float) -> list[Action]:
        gone = [s for s in dict.fromkeys(streams) if s in self.streams]
        for s in gone:
            del self.streams[s]
            self.last_seen.pop(s, None)
        for op in list(self._queue):
            if op.method == "SUBSCRIBE":
                op.streams = [s for s in op.streams if s in self.streams]
                if not op.streams:
                    self._queue.remove(op)
        live = [s for s in gone if s in self.subscribed]
        if self._pending is not None and self._pending[1].method == "SUBSCRIBE":
            live += [s for s in gone if s in self._pending[1].streams and s not in live]
        self.subscribed.difference_update(gone)
        if not live or not self.live:
            return []
        for i in range(0, len(live), self.chunk):
            self._queue.append(_Op("UNSUBSCRIBE", live[i : i + self.chunk]))
        return self._pump(now)

    def resubscribe(self, stream: str, now: float) -> list[Action]:
        """UNSUBSCRIBE then SUBSCRIBE one silent stream without reconnecting."""
        if self.state != ConnState.SUBSCRIBED or stream not in self.streams:
            return []
        self.resubscribes += 1
        self.subscribed.discard(stream)
        self._queue.append(_Op("UNSUBSCRIBE", [stream]))
        self._queue.append(_Op("SUBSCRIBE", [stream]))
        return self._pump(now)

    def silence(self, stream: str, now: float) -> float:
        """Seconds since ``stream`` last delivered (since SUBSCRIBED if it never did)."""
        return now - self.last_seen.get(stream, self.subscribed_at)

    # --- internals -------------------------------------------------------------------------------

    def _queue_subscribe(self, streams: list[str]) -> None:
        for i in range(0, len(streams), self.chunk):
            self._queue.append(_Op("SUBSCRIBE", streams[i : i + self.chunk]))

    def _pump(self, now: float) -> list[Action]:
        """Send the next queued request if none is in flight and a token is ready; SUBSCRIBED when done."""
        actions: list[Action] = []
        if not self.live:
            return actions
        if self._pending is None and self._queue:
            self._tokens = min(1.0, self._tokens + (now - self._tokens_at) * self._rate)
            self._tokens_at = now
            if self._tokens >= 1.0 - 1e-9:  # float refill: 0.2 s at 5/s must make a whole token
                self._tokens -= 1.0
                op = self._queue.popleft()
                self._next_id += 1
                build = subscribe if op.method == "SUBSCRIBE" else unsubscribe
                self._pending = (self._next_id, op, now + self.config.control_timeout)
                actions.append(Send(build(op.streams, self._next_id), self._next_id))
        if (self.state == ConnState.CONNECTED and self._pending is None and not self._queue
                and all(s in self.subscribed for s in self.streams)):
            self.subscribed_at = now
            actions.append(self._set(ConnState.SUBSCRIBED, f"{len(self.subscribed)} streams"))
            # No backoff reset here: the episode ends after reset_after seconds of data.
            self._reset_at = now + self.config.reconnect.reset_after
            if self._lost_before:
                self.reconnects += 1
            self._awaiting_delivery = True
        return actions

    def _retry(self, reason: str) -> list[Action]:
        delay = self._backoff.next_delay()
        self.retries = self._backoff.attempts
        if delay is None:
            return self._fail(f"{self._policy.max_retries} retries spent; last: {reason}")
        note = f"retry {self._backoff.attempts}/{self._policy.max_retries} in {delay:.2f}s: {reason}"
        return [self._set(ConnState.RECONNECTING, note), Sleep(delay)]

    def _fail(self, reason: str) -> list[Action]:
        self._failed = True
        return [self._set(ConnState.FAILED, reason), Sleep(self.config.reconnect.failed_retry_interval)]

    def _set(self, state: ConnState, reason: str) -> Transition:
        previous, self.state = self.state, state
        return Transition(previous, state, reason)
