"""The simulator's side of the WebSocket rules: which stream names it acknowledges.

Paths, control replies and error codes are the protocol's (``klinestore.ingest.protocol.wsserve``,
shared with the gateway), re-exported here; this module adds the simulator's rule for which
names it serves, tested directly.
"""

from __future__ import annotations

from collections.abc import Collection

from klinestore.ingest.protocol.wsserve import (
    METHODS,
    TOO_MANY_REQUESTS,
    TOO_MANY_SUBSCRIPTIONS,
    Endpoint,
    Outcome,
    deliverable,
    parse,
    parse_path,
)
from klinestore.ingest.protocol.wsserve import handle as _handle
from klinestore.sim.feeds import served

__all__ = ["METHODS", "TOO_MANY_REQUESTS", "TOO_MANY_SUBSCRIPTIONS", "Endpoint", "Outcome", "acknowledged",
           "deliverable", "handle", "parse_path"]


def acknowledged(name: str) -> bool:
    """Names the simulator accepts: streams it serves, also with an uppercase symbol (which
    Binance acknowledges and never feeds). Anything else is refused with code 2."""
    stream = parse(name)
    if stream is None:
        symbol, at, rest = name.partition("@")
        if not at or symbol == symbol.lower():
            return False
        stream = parse(symbol.lower() + at + rest)
    return stream is not None and served(stream)


def _refusal(name: str) -> str | None:
    return None if acknowledged(name) else f"Invalid request: stream {name!r} is not served"


def handle(raw: str | bytes, *, subscriptions: Collection[str], combined: bool, max_streams: int) -> Outcome:
    """Answer one incoming message as Binance does (the protocol's rules, the simulator's streams)."""
    return _handle(raw, subscriptions=subscriptions, combined=combined, max_streams=max_streams, served=_refusal)
