"""One WebSocket connection as the exchange sees it: subscriptions, timers, limits, faults.

Frames are written synchronously through the websockets protocol object (as websockets'
own ``broadcast`` does), so the pump never awaits a slow client. The write buffer is the
only queue and it is bounded: a connection whose buffer passes ``send_buffer_limit`` is a
slow consumer and is disconnected (counted in ``stats``), never allowed to grow the
simulator's memory.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from klinestore.sim.control import Endpoint
from klinestore.sim.faults import FaultState

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008


@dataclass(slots=True)
class Stats:
    """Counters shown by ``GET /sim/stats``."""

    connections: int = 0
    frames: int = 0
    bytes: int = 0
    replies: int = 0
    slow_disconnects: int = 0
    rate_limit_closes: int = 0
    pong_timeouts: int = 0
    age_closes: int = 0
    faulted: dict[str, int] = field(default_factory=lambda: {"drop": 0, "reset": 0, "stall": 0})


class Session:
    """Exchange-side state of one connection (the socket itself belongs to websockets)."""

    def __init__(
        self, sid: int, conn: ServerConnection, endpoint: Endpoint, path: str, now_ms: int, *,
        faults: FaultState, stats: Stats, buffer_limit: int, max_messages: int, ping_interval_ms: int,
    ) -> None:
        self.id = sid
        self.conn = conn
        self.path = path
        self.route = endpoint.route
        self.combined = endpoint.combined
        self.subscriptions: dict[str, None] = {}
        self.connected_ms = now_ms
        self.next_ping_ms = now_ms + ping_interval_ms
        self.awaiting_pong_since: int | None = None
        self.frames = 0
        self.closing = False
        self.close_reason = ""
        self.stalled_until = 0.0
        self.held: bytes | None = None
        self.dirty = False
        self._faults = faults
        self._stats = stats
        self._buffer_limit = buffer_limit
        self._max_messages = max_messages
        self._received: deque[float] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unstalled = asyncio.Event()
        self._unstalled.set()

    # --- writing ------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return not self.closing and self.conn.protocol.state is State.OPEN

    @property
    def stalled(self) -> bool:
        return not self._unstalled.is_set()

    def write(self, data: bytes, *, flush: bool = True) -> bool:
        """Queue one text frame; write it now unless ``flush`` is False (the pump flushes once
        per tick, one syscall per connection instead of one per frame). False if closed."""
        if not self.open:
            return False
        try:
            self.conn.protocol.send_text(data)
        except Exception as exc:  # the protocol already left OPEN under us
            log.debug("connection %d: write failed: %s", self.id, exc)
            self.closing = True
            return False
        self._stats.bytes += len(data)
        self.dirty = True
        return self.flush() if flush else True

    def flush(self) -> bool:
        """Hand queued frames to the transport; a buffer over the limit is a slow consumer."""
        if not self.dirty:
            return True
        self.dirty = False
        try:
            self.conn.send_data()
        except Exception as exc:
            log.debug("connection %d: flush failed: %s", self.id, exc)
            self.closing = True
            return False
        transport = self.conn.transport
        if transport is not None and transport.get_write_buffer_size() > self._buffer_limit:
            self._stats.slow_disconnects += 1
            log.warning("connection %d: slow consumer (%d bytes buffered), disconnecting", self.id, transport.get_write_buffer_size())
            self.reset("slow consumer")
            return False
        return True

    def deliver(self, payload: bytes, wrapped: bytes) -> None:
        """Send one data frame (bare or combined), through any pending frame faults."""
        if self.stalled:
            return
        data = wrapped if self.combined else payload
        if self.held is not None or self._faults.frames_pending:
            frames, self.held = self._faults.transform(data, self.held)
        else:
            frames = (data,)
        for frame in frames:
            if self.write(frame, flush=False):
                self.frames += 1
                self._stats.frames += 1

    def reply(self, data: bytes) -> None:
        if self.write(data):
            self._stats.replies += 1

    # --- incoming messages ----------------------------------------------------------------

    def admit_message(self) -> bool:
        """Count an incoming message; False once more than the limit arrived within a second.

        Real seconds, not exchange seconds: the limit paces the client's host, and a client
        that paces itself on its own clock must be judged on that clock at any speed.
        """
        now = time.monotonic()
        while self._received and now - self._received[0] >= 1.0:
            self._received.popleft()
        if len(self._received) >= self._max_messages:
            return False
        self._received.append(now)
        return True

    async def wait_unstalled(self) -> None:
        await self._unstalled.wait()

    # --- ending and faults ------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (a close frame) without waiting for it."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = f"{code} {reason}"
        self._spawn(self.conn.close(code, reason))

    def reset(self, reason: str = "reset") -> None:
        """Drop the TCP connection with a RST and no close frame (SO_LINGER 0, then abort)."""
        self.closing = True
        self.close_reason = reason
        transport = self.conn.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()

    def stall(self, seconds: float) -> None:
        """Go silent: no frames out, nothing read (so pings go unanswered), for ``seconds``."""
        transport = self.conn.transport
        if transport is None or self.closing:
            return
        self.stalled_until = time.monotonic() + seconds
        self._unstalled.clear()
        transport.pause_reading()
        asyncio.get_running_loop().call_later(seconds, self._unstall)

    def _unstall(self) -> None:
        if time.monotonic() + 1e-3 < self.stalled_until:
            return  # a later stall extended this one
        self._unstalled.set()
        self.awaiting_pong_since = None  # the silence was the exchange's, not the client's
        transport = self.conn.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def send_ping(self, now_ms: int) -> None:
        """Ping; ``awaiting_pong_since`` holds the oldest unanswered ping's exchange time."""
        if self.awaiting_pong_since is None:
            self.awaiting_pong_since = now_ms
        self._spawn(self._ping())

    async def _ping(self) -> None:
        try:
            waiter = await self.conn.ping()
        except Exception:
            return
        waiter.add_done_callback(self._ponged)

    def _ponged(self, waiter: asyncio.Future[float]) -> None:
        if not waiter.cancelled() and waiter.exception() is None:
            self.awaiting_pong_since = None

    def describe(self, now_ms: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "route": self.route.value if self.route else None,
            "combined": self.combined,
            "subscriptions": list(self.subscriptions),
            "age_ms": now_ms - self.connected_ms,
            "messages_sent": self.frames,
            "stalled": self.stalled,
            "closing": self.close_reason or None,
        }
