"""A small asyncio HTTP/1.1 server: GET and POST with Content-Length bodies, keep-alive.

The one asyncio module of the protocol package: the simulator and the gateway both serve
Binance's REST through it (the simulator may import only ``ingest.protocol``), so one
request parser and one response writer serve both. websockets' HTTP parser refuses request
bodies, and Binance serves REST on its own host anyway (``fapi`` beside ``fstream``), so
REST runs here on its own port. Limits are bounded
(head 16 KiB, body 1 MiB, idle keep-alive 60 s); chunked request bodies are refused (501).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
IDLE_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    peer: str = ""  # "host:port" of the client's connection
    target: str = ""  # the request target as sent (path and query)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> Response:
        return cls(status, json.dumps(obj, separators=(",", ":")).encode(), headers or [])


Handler = Callable[[Request], Awaitable[Response]]
#: Takes over a connection whose request asks ``Upgrade: websocket`` (it owns the streams until it returns).
Upgrade = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class HttpServer:
    """Serves ``handler`` on ``host:port`` until :meth:`stop`."""

    def __init__(self, handler: Handler, host: str, port: int, *, max_connections: int | None = None,
                 upgrade: Upgrade | None = None) -> None:
        self._handler = handler
        self._upgrade = upgrade
        self._host = host
        self._port = port
        self._max_connections = max_connections  # beyond it a connection gets 503 and is closed
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def connections(self) -> int:
        return len(self._writers)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port, limit=MAX_HEAD)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._max_connections is not None and len(self._writers) >= self._max_connections:
            self.refused += 1
            body = {"code": -1003, "msg": f"Too many connections; the limit is {self._max_connections}."}
            try:
                await _write(writer, Response.json(503, body), keep_alive=False)
            except ConnectionError:
                pass
            writer.close()
            return
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        peer_name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "")
        try:
            while True:
                try:
                    request, keep_alive = await asyncio.wait_for(_read_request(reader, peer_name), IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                except BadRequest as exc:
                    await _write(writer, Response.json(exc.status, {"error": str(exc)}), keep_alive=False)
                    return
                if self._upgrade is not None and request.headers.get("upgrade", "").lower() == "websocket":
                    await self._upgrade(request, reader, writer)
                    return
                try:
                    response = await self._handler(request)
                except Exception:
                    log.exception("REST handler failed for %s %s", request.method, request.path)
                    response = Response.json(500, {"code": -1000, "msg": "An unknown error occurred while processing the request."})
                await _write(writer, response, keep_alive=keep_alive)
                if not keep_alive:
                    return
        except ConnectionError:
            return
        finally:
            self._writers.discard(writer)
            writer.close()


async def _read_request(reader: asyncio.StreamReader, peer: str = "") -> tuple[Request, bool]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, f"bad request line {lines[0]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise BadRequest(400, f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise BadRequest(501, "chunked request bodies are not supported; send Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadRequest(400, "bad Content-Length") from None
    if not 0 <= length <= MAX_BODY:
        raise BadRequest(413, f"body larger than {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    split = urlsplit(target)
    query = parse_qs(split.query, keep_blank_values=True)
    return Request(method.upper(), split.path, query, headers, body, peer, target), keep_alive


async def _write(writer: asyncio.StreamWriter, response: Response, *, keep_alive: bool) -> None:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
        *(f"{k}: {v}" for k, v in response.headers),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
    await writer.drain()
