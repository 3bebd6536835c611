"""Simulator fixtures and small plain-HTTP / plain-websockets helpers for tests.

Registered in ``conftest.py`` (``pytest_plugins``). ``sim_factory(**options)`` starts a
:class:`SimThread` with :class:`SimConfig` options and always stops it at teardown; ``sim``
is a fast default (BTCUSDT and ETHUSDT, speed 60, seed 7, starting 2024-05-01T00:00Z). The helpers use only the
standard library and websockets, never the project's ingest code, so the simulator is
checked the way an outside client sees it.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from klinestore.sim import SimThread

SimFactory = Callable[..., SimThread]
#: 2024-05-01T00:00Z: tests start on an hour, whose first minute always trades, so what they
#: see does not depend on the wall clock.
START_MS = 1_714_521_600_000


@pytest.fixture
def sim_factory() -> Iterator[SimFactory]:
    """Start simulators with ``SimConfig`` options; all are stopped at teardown."""
    started: list[SimThread] = []

    def make(**options: Any) -> SimThread:
        sim = SimThread(**options).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(sim_factory: SimFactory) -> SimThread:
    """A running simulator: BTCUSDT and ETHUSDT at speed 60 (a 1m bar a second), seed 7,
    exchange time from 2024-05-01T00:00Z."""
    return sim_factory(symbols=("BTCUSDT", "ETHUSDT"), speed=60, seed=7, start_ms=START_MS)


def http(method: str, url: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    """One plain HTTP request: (status, headers, parsed JSON body)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def get(url: str) -> tuple[int, dict[str, str], Any]:
    return http("GET", url)


def post(url: str, body: Any) -> tuple[int, dict[str, str], Any]:
    return http("POST", url, body)


async def frames(ws: ClientConnection, seconds: float, *, stop: Callable[[list[Any]], bool] | None = None) -> list[Any]:
    """JSON messages received for ``seconds`` (or until ``stop(messages)`` is true)."""
    out: list[Any] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            raw = await asyncio.wait_for(ws.recv(), left)
        except asyncio.TimeoutError:
            break
        out.append(json.loads(raw))
        if stop is not None and stop(out):
            break
    return out


async def request(ws: ClientConnection, message: dict[str, Any], *, timeout: float = 5.0) -> Any:
    """Send a control message and return the reply with the same id (data frames skipped)."""
    await ws.send(json.dumps(message))
    deadline = time.monotonic() + timeout
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if "stream" not in reply and reply.get("id") == message.get("id"):
            return reply


class RawClient:
    """A bare-socket WebSocket client that never answers pings (to test the pong deadline)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        import base64
        import os
        import socket
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        self.status = int(head.split(b" ", 2)[1])

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def frame(self) -> tuple[int, bytes]:
        """The next frame: (opcode, payload); server frames are unmasked."""
        first, second = self._exact(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(self._exact(2), "big")
        elif length == 127:
            length = int.from_bytes(self._exact(8), "big")
        return first & 0x0F, self._exact(length)

    def close(self) -> None:
        self.sock.close()
