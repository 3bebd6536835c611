"""Fan-out: the frames the service receives, passed on to the WebSocket clients subscribed to them.

The dispatcher calls :meth:`Fanout.tap` for every routed frame only while some client is
subscribed (``Dispatcher.tap`` is None otherwise, so ingest pays one attribute test per frame
when nobody listens). The tap appends to a bounded queue; a task on the same loop drains it,
serialising each frame once per layout (combined envelope, or the bare event for ``/ws``
clients: ``klinestore.ingest.protocol.wire.payload``, byte for byte as received) and writing
the same bytes to every subscriber. Nothing here waits on a client: a client whose unsent
bytes pass ``gateway.send_buffer`` is disconnected, and if the queue itself overflows (the
loop cannot keep up) every subscriber is disconnected rather than sent a stream with holes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection
from typing import Protocol

from websockets.frames import Frame, Opcode

from klinestore.ingest.protocol.wire import payload

log = logging.getLogger(__name__)

#: Close code and reason for a client the gateway stops serving (1008: policy, as Binance's).
CLOSE_SLOW = (1008, "Client too slow: send buffer full")
CLOSE_OVERLOAD = (1013, "Gateway overloaded: frames dropped")
_BATCH = 256  # frames per drain step before the loop gets a turn


class Subscriber(Protocol):
    combined: bool
    subscriptions: list[str]

    def push(self, data: bytes) -> bool: ...  # False: the client was dropped (too slow)

    def close(self, code: int, reason: str) -> None: ...


def text_frame(data: bytes) -> bytes:
    """An unmasked server text frame: the same bytes serve every client."""
    return Frame(Opcode.TEXT, data).serialize(mask=False)


class Fanout:
    """Subscriptions by stream, the tap and the drain loop."""

    def __init__(self, set_tap: Callable[[Callable[[str, bytes | str], None] | None], None], *,
                 queue_frames: int) -> None:
        self._set_tap = set_tap
        self._max = queue_frames
        self.by_stream: dict[str, set[Subscriber]] = {}
        self._queue: deque[tuple[str, bytes | str]] = deque()
        self._wake = asyncio.Event()
        self.frames_in = 0
        self.frames_out = 0
        self.dropped_slow = 0
        self.overloads = 0
        self.bad_frames = 0  # frames that could not be passed on (counted, logged, skipped)

    # --- subscriptions ------------------------------------------------------------------

    def subscribe(self, client: Subscriber, streams: Collection[str]) -> None:
        for name in streams:
            self.by_stream.setdefault(name, set()).add(client)
            if name not in client.subscriptions:
                client.subscriptions.append(name)
        self._retap()

    def unsubscribe(self, client: Subscriber, streams: Collection[str]) -> None:
        for name in streams:
            clients = self.by_stream.get(name)
            if clients is not None:
                clients.discard(client)
                if not clients:
                    del self.by_stream[name]
            if name in client.subscriptions:
                client.subscriptions.remove(name)
        self._retap()

    def forget(self, client: Subscriber) -> None:
        self.unsubscribe(client, list(client.subscriptions))

    def _retap(self) -> None:
        self._set_tap(self.tap if self.by_stream else None)

    # --- the hot side ---------------------------------------------------------------------

    def tap(self, stream: str, raw: bytes | str) -> None:
        """Called by ingest's dispatcher per routed frame: queue it if anyone wants it."""
        if stream in self.by_stream:
            queue = self._queue
            queue.append((stream, raw))
            if len(queue) == 1:
                self._wake.set()
            elif len(queue) > self._max:
                self._overload()

    def _overload(self) -> None:
        self.overloads += 1
        self._queue.clear()
        clients = {c for subs in self.by_stream.values() for c in subs}
        log.warning("gateway: fan-out queue over %d frames; disconnecting %d clients", self._max, len(clients))
        for client in clients:
            client.close(*CLOSE_OVERLOAD)
            self.forget(client)

    # --- the drain loop -------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            done = 0
            while self._queue:
                stream, raw = self._queue.popleft()
                try:
                    self.deliver(stream, raw)
                except Exception:  # noqa: BLE001 - one frame must not stop the fan-out for everyone
                    self.bad_frames += 1
                    log.exception("gateway: a frame of %s could not be passed on", stream)
                done += 1
                if done % _BATCH == 0:
                    await asyncio.sleep(0)

    def deliver(self, stream: str, raw: bytes | str) -> None:
        clients = self.by_stream.get(stream)
        if not clients:
            return
        self.frames_in += 1
        frame = raw.encode() if isinstance(raw, str) else raw
        combined = single = b""
        for client in list(clients):
            if client.combined:
                combined = combined or text_frame(frame)
                data = combined
            else:
                single = single or text_frame(payload(frame, stream))
                data = single
            if client.push(data):
                self.frames_out += 1
            else:
                self.dropped_slow += 1
                self.forget(client)
