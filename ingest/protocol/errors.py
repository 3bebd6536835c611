"""The ingest error tree (see :mod:`klinestore.ingest.errors`), kept in the pure protocol.

The protocol raises these, and the simulator imports the protocol (never the connection
layer), so the classes live where both can reach them without importing sockets or clocks.
"""

from __future__ import annotations

from klinestore.core.errors import KlinestoreError


class IngestError(KlinestoreError):
    """Root of ingest errors."""


class ProtocolError(IngestError, ValueError):
    """Bytes that do not decode to a Binance message."""


class ControlError(IngestError):
    """An error reply to a control request: ``{"error": {"code": C, "msg": ...}, "id": N}``."""

    def __init__(self, code: int, msg: str, request_id: int | None = None) -> None:
        self.code = code
        self.msg = msg
        self.request_id = request_id
        super().__init__(f"exchange refused request {request_id}: code {code}: {msg}")


class PlanError(IngestError, ValueError):
    """The requested streams do not fit ``max_connections`` x ``max_streams_per_connection``."""


class RestError(IngestError):
    """A REST request failed."""

    def __init__(self, message: str, *, status: int = 0, endpoint: str = "") -> None:
        self.status = status
        self.endpoint = endpoint
        super().__init__(message)


class RateLimited(RestError):
    """HTTP 429: the weight limit was hit."""

    def __init__(self, message: str, *, retry_after: float, endpoint: str = "") -> None:
        self.retry_after = retry_after
        super().__init__(message, status=429, endpoint=endpoint)


class Banned(RestError):
    """HTTP 418: the IP is banned for ignoring 429s."""


class ArchiveError(IngestError):
    """An archive from the exchange's archive host cannot be used (checksum mismatch, bad answer)."""
