"""The server side of Binance's WebSocket API as pure code: URL paths and live control requests.

No sockets here. The simulator and the gateway answer SUBSCRIBE, UNSUBSCRIBE,
LIST_SUBSCRIPTIONS, SET_PROPERTY and GET_PROPERTY through :func:`handle`, each with its own
rule for which stream names it serves (``served``), so the replies, error codes 0-4 and
paths (routed ``/market`` and ``/public``, legacy ``/ws`` and ``/stream``) are one
implementation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from klinestore.ingest.protocol.control import CLOSE_POLICY_VIOLATION, ErrorCode
from klinestore.ingest.protocol.errors import ProtocolError
from klinestore.ingest.protocol.streams import Route, StreamName, parse_stream
from klinestore.ingest.protocol.wire import error_reply, reply

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
TOO_MANY_SUBSCRIPTIONS = "Too many subscriptions"
TOO_MANY_REQUESTS = "Too many requests"
_MAX_ID = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a WebSocket URL opens: a route (None: legacy, ``/public`` streams only) and streams."""

    route: Route | None
    combined: bool
    streams: tuple[str, ...]


def parse_path(path: str) -> Endpoint | None:
    """``/market/stream?streams=a/b``, ``/public/ws/<stream>``, legacy ``/ws/...``; None: 404."""
    parts = urlsplit(path)
    segments = [s for s in parts.path.split("/") if s]
    route: Route | None = None
    if segments and segments[0] in (Route.MARKET.value, Route.PUBLIC.value):
        route = Route(segments[0])
        segments = segments[1:]
    if not segments:
        return None
    if segments[0] == "stream" and len(segments) == 1:
        raw = parse_qs(parts.query).get("streams", [""])[-1]
        return Endpoint(route, True, tuple(s for s in unquote(raw).split("/") if s))
    if segments[0] == "ws" and len(segments) <= 2:
        return Endpoint(route, False, tuple(segments[1:]))
    return None


def parse(name: str) -> StreamName | None:
    try:
        return parse_stream(name)
    except ProtocolError:
        return None


def deliverable(name: str, route: Route | None) -> StreamName | None:
    """The parsed stream if a connection on ``route`` gets its data: a lowercase name on its own
    route; on the unrouted legacy URL (``route`` None) only ``/public`` streams, as on Binance."""
    stream = parse(name)
    if stream is None:
        return None
    return stream if stream.route is (route or Route.PUBLIC) else None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a control message does: the reply to send and the changes to make."""

    reply: bytes
    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    combined: bool | None = None
    close: tuple[int, str] | None = None


def _error(request_id: int | None, code: ErrorCode, msg: str) -> Outcome:
    return Outcome(error_reply(request_id, int(code), msg))


def handle(raw: str | bytes, *, subscriptions: Collection[str], combined: bool, max_streams: int,
           served: Callable[[str], str | None]) -> Outcome:
    """Answer one incoming message as Binance does; ``served(name)`` is None for a stream the
    server delivers, else the one-line reason it refuses it (error code 2)."""
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(None, ErrorCode.INVALID_JSON, f"Invalid JSON: {exc}")
    if not isinstance(message, dict):
        return _error(None, ErrorCode.INVALID_REQUEST, "Invalid request: expected a JSON object")
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int) or not 0 <= request_id <= _MAX_ID:
        return _error(None, ErrorCode.INVALID_REQUEST, "Invalid request: request ID must be an unsigned integer")
    method = message.get("method")
    if method not in METHODS:
        expected = ", ".join(f"`{m}`" for m in METHODS)
        return _error(request_id, ErrorCode.INVALID_REQUEST, f"Invalid request: unknown variant `{method}`, expected one of {expected}")
    params = message.get("params", [])
    if not isinstance(params, list):
        return _error(request_id, ErrorCode.INVALID_REQUEST, "Invalid request: params must be an array")
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        return _streams(method, params, request_id, subscriptions, max_streams, served)
    if method == "LIST_SUBSCRIPTIONS":
        return Outcome(reply(request_id, list(subscriptions)))
    if method == "SET_PROPERTY":
        if len(params) != 2 or not isinstance(params[0], str):
            return _error(request_id, ErrorCode.INVALID_REQUEST, "Invalid request: expected [property name, value]")
        if params[0] != "combined":
            return _error(request_id, ErrorCode.UNKNOWN_PROPERTY, "Unknown property")
        if not isinstance(params[1], bool):
            return _error(request_id, ErrorCode.INVALID_VALUE_TYPE, "Invalid value type: expected Boolean")
        return Outcome(reply(request_id, None), combined=params[1])
    if len(params) != 1 or not isinstance(params[0], str):
        return _error(request_id, ErrorCode.INVALID_REQUEST, "Invalid request: expected [property name]")
    if params[0] != "combined":
        return _error(request_id, ErrorCode.UNKNOWN_PROPERTY, "Unknown property")
    return Outcome(reply(request_id, combined))


def _streams(method: str, params: list[object], request_id: int, subscriptions: Collection[str], max_streams: int,
             served: Callable[[str], str | None]) -> Outcome:
    names: list[str] = []
    for name in params:
        if not isinstance(name, str):
            return _error(request_id, ErrorCode.INVALID_REQUEST, "Invalid request: stream names must be strings")
        refusal = served(name)
        if refusal is not None:
            return _error(request_id, ErrorCode.INVALID_REQUEST, refusal)
        if name not in names:
            names.append(name)
    if method == "UNSUBSCRIBE":
        return Outcome(reply(request_id, None), unsubscribe=tuple(names))
    added = [n for n in names if n not in subscriptions]
    if len(subscriptions) + len(added) > max_streams:
        return Outcome(
            error_reply(request_id, int(ErrorCode.TOO_MANY_SUBSCRIPTIONS), TOO_MANY_SUBSCRIPTIONS),
            close=(CLOSE_POLICY_VIOLATION, TOO_MANY_SUBSCRIPTIONS),
        )
    return Outcome(reply(request_id, None), subscribe=tuple(added))
