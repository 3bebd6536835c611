"""Talking to the exchange and holding live state: connections, parsing, buffers, order books."""

from ingest.errors import Banned, ControlError, IngestError, PlanError, ProtocolError, RateLimited, RestError

__all__ = ["Banned", "ControlError", "IngestError", "PlanError", "ProtocolError", "RateLimited", "RestError"]
