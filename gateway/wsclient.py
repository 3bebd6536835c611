"""One WebSocket client of the gateway: websockets' sans-I/O protocol over the HTTP server's streams.

The HTTP server hands over a request that asks ``Upgrade: websocket``; the handshake, control
requests (``klinestore.ingest.protocol.wsserve``, the simulator's rules too) and pings are
answered here, and, as Binance does, the client is pinged every ``ping_interval`` and dropped
after ``pong_timeout`` of silence (a vanished peer must not keep its subscriptions). Data
frames are written by the fan-out straight to the transport; the transport's unsent bytes
are the client's only queue, bounded by ``gateway.send_buffer``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from websockets.datastructures import Headers
from websockets.frames import Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import State
from websockets.server import ServerProtocol

from klinestore.gateway.fanout import CLOSE_SLOW, Fanout
from klinestore.ingest.protocol import wsserve
from klinestore.ingest.protocol.control import CLOSE_POLICY_VIOLATION, EXCHANGE_MAX_MESSAGES_PER_SECOND
from klinestore.ingest.protocol.http import Request
from klinestore.ingest.protocol.wsserve import Endpoint

log = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 16  # control requests are small
READ_CHUNK = 1 << 16


def handshake(request: Request, refusal: str | None, status: int = 400) -> tuple[bytes, ServerProtocol | None]:
    """The answer to the upgrade request, and the open protocol if it was accepted.

    The HTTP server parsed the request already, so websockets checks and answers it from the
    parsed headers, and the connection's protocol starts OPEN (parsing frames from the first byte).
    """
    check = ServerProtocol(max_size=MAX_MESSAGE)
    headers = Headers()
    for name, value in request.headers.items():
        headers[name] = value
    response = check.accept(WsRequest(request.target or request.path, headers))
    if refusal is not None and response.status_code == 101:
        response = check.reject(status, refusal + "\n")
    if response.status_code != 101:
        return response.serialize(), None
    return response.serialize(), ServerProtocol(max_size=MAX_MESSAGE, state=State.OPEN)


class WsClient:
    """A connected client: its subscriptions, its writes, its control requests."""

    def __init__(self, proto: ServerProtocol, endpoint: Endpoint, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, fanout: Fanout, *, send_buffer: int, max_streams: int,
                 served: Callable[[str, Endpoint], str | None], ping_interval: float = 180.0,
                 pong_timeout: float = 600.0) -> None:
        self.proto = proto
        self.endpoint = endpoint
        self.combined = endpoint.combined
        self.subscriptions: list[str] = []
        self._reader = reader
        self._writer = writer
        self._transport = writer.transport
        self._fanout = fanout
        self._send_buffer = send_buffer
        self._max_streams = max_streams
        self._served = served
        self._second = 0
        self._messages = 0
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._heard = time.monotonic()  # the last bytes from the client
        self.pings = 0
        self.closed = False

    # --- writes (the fan-out calls push) ----------------------------------------------------

    def push(self, data: bytes) -> bool:
        if self.closed:
            return False
        transport = self._transport
        if transport.get_write_buffer_size() > self._send_buffer:  # lagging by more than the bound
            self.abort(*CLOSE_SLOW, hard=True)
            return False
        transport.write(data)
        return True

    def _flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                self._transport.write(data)

    def close(self, code: int, reason: str) -> None:
        """Close politely (a close frame), then stop reading."""
        if self.closed:
            return
        if self.proto.state is State.OPEN:
            self.proto.send_close(code, reason)
            self._flush()
        self.abort(code, reason)

    def abort(self, code: int, reason: str, *, hard: bool = False) -> None:
        """Stop serving the client; ``hard``: drop the connection now, unsent bytes and all (a
        client too slow to take its frames would not take a close frame either)."""
        if self.closed:
            return
        self.closed = True
        log.info("gateway: client %s closed: %d %s", self._writer.get_extra_info("peername"), code, reason)
        self._fanout.forget(self)
        if hard:
            self._transport.abort()
        else:
            self._writer.close()

    # --- reads ----------------------------------------------------------------------------

    async def serve(self) -> None:
        keepalive = asyncio.create_task(self._keepalive(), name="gateway-ping")
        try:
            while not self.closed:
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    self.proto.receive_eof()
                    break
                self._heard = time.monotonic()
                self.proto.receive_data(data)
                for event in self.proto.events_received():
                    if event.opcode is Opcode.TEXT and not self.closed:
                        self._control(event.data)
                self._flush()
                if self.proto.state is State.CLOSED or self.proto.close_expected():
                    break
        except ConnectionError:
            pass
        except Exception:  # noqa: BLE001 - a bug must cost this client, not the gateway
            log.exception("gateway: client connection failed")
            self.close(1011, "Internal error")
        finally:
            keepalive.cancel()
            self.closed = True
            self._fanout.forget(self)

    async def _keepalive(self) -> None:
        while not self.closed:
            await asyncio.sleep(self._ping_interval)
            if self.closed:
                return
            if time.monotonic() - self._heard > self._pong_timeout:
                self.close(1001, "ping timeout")
                self._writer.transport.abort()  # a vanished peer will not read the close frame
                return
            if self.proto.state is State.OPEN:
                self.proto.send_ping(str(self.pings).encode())
                self.pings += 1
                self._flush()

    def _control(self, raw: bytes) -> None:
        second = int(time.monotonic())
        if second != self._second:
            self._second, self._messages = second, 0
        self._messages += 1
        if self._messages > EXCHANGE_MAX_MESSAGES_PER_SECOND:
            self.close(CLOSE_POLICY_VIOLATION, wsserve.TOO_MANY_REQUESTS)
            return
        outcome = wsserve.handle(raw, subscriptions=self.subscriptions, combined=self.combined,
                                 max_streams=self._max_streams,
                                 served=lambda name: self._served(name, self.endpoint))
        self.proto.send_text(outcome.reply)
        self._flush()
        if outcome.close is not None:
            self.close(*outcome.close)
            return
        if outcome.subscribe:
            self._fanout.subscribe(self, outcome.subscribe)
        if outcome.unsubscribe:
            self._fanout.unsubscribe(self, outcome.unsubscribe)
        if outcome.combined is not None:
            self.combined = outcome.combined
