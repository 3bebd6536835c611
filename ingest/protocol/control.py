"""Live control requests (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET/GET_PROPERTY).

Requests are ``{"method": M, "params": [...], "id": N}``; replies ``{"result": R, "id": N}`` or
``{"error": {"code": C, "msg": "..."}, "id": N}``. The exchange closes a connection that sends
more than 10 messages a second (code 1008), so callers pace these (see ``klinestore.ingest.pool``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from klinestore.ingest.protocol.errors import ControlError, ProtocolError
from klinestore.ingest.protocol.events import Frame

#: Incoming messages per second per connection the exchange tolerates before closing (1008).
EXCHANGE_MAX_MESSAGES_PER_SECOND = 10
#: Close code the exchange uses for policy violations (rate, stream count).
CLOSE_POLICY_VIOLATION = 1008


class ErrorCode(enum.IntEnum):
    """Binance's control-request error codes."""

    UNKNOWN_PROPERTY = 0
    INVALID_VALUE_TYPE = 1
    INVALID_REQUEST = 2
    INVALID_JSON = 3
    TOO_MANY_SUBSCRIPTIONS = 4


class _Request(msgspec.Struct, omit_defaults=True):
    method: str
    params: list[Any] = []
    id: int = 0


_encoder = msgspec.json.Encoder()


def _request(method: str, params: Iterable[Any], request_id: int) -> bytes:
    if not isinstance(request_id, int) or request_id < 0:
        raise ProtocolError(f"request id must be a non-negative integer, got {request_id!r}")
    return _encoder.encode(_Request(method, list(params), request_id))


def subscribe(streams: Iterable[str], request_id: int) -> bytes:
    return _request("SUBSCRIBE", streams, request_id)


def unsubscribe(streams: Iterable[str], request_id: int) -> bytes:
    return _request("UNSUBSCRIBE", streams, request_id)


def list_subscriptions(request_id: int) -> bytes:
    return _encoder.encode({"method": "LIST_SUBSCRIPTIONS", "id": request_id})


def set_property(name: str, value: Any, request_id: int) -> bytes:
    return _request("SET_PROPERTY", (name, value), request_id)


def get_property(name: str, request_id: int) -> bytes:
    return _request("GET_PROPERTY", (name,), request_id)


@dataclass(frozen=True, slots=True)
class ControlReply:
    """A reply to a control request; ``error`` set means the exchange refused it."""

    id: int | str | None
    result: Any = None
    error: ControlError | None = None

    @classmethod
    def from_frame(cls, frame: Frame) -> ControlReply:
        if not frame.is_control:
            raise ProtocolError(f"not a control reply: stream {frame.stream!r}")
        if frame.error is not None:
            request_id = frame.id if isinstance(frame.id, int) else None
            return cls(frame.id, None, ControlError(frame.error.code, frame.error.msg, request_id))
        return cls(frame.id, None if frame.result is msgspec.UNSET else frame.result)

    def raise_for_error(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result
