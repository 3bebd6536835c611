"""Errors of the ingest package.

Tree::

    KlinestoreError
    └── IngestError
        ├── ProtocolError      a frame or REST body that is not what Binance sends
        ├── ControlError       the exchange refused a SUBSCRIBE/UNSUBSCRIBE (carries its code)
        ├── PlanError          streams that cannot fit the pool's limits
        └── RestError          a REST call failed (``status`` is the HTTP status, 0 for transport)
            ├── RateLimited    429: back off for ``retry_after`` seconds
            └── Banned         418: the IP is banned; never retried automatically
        └── ArchiveError       an archive-host download that cannot be used (checksum mismatch...)

websockets' and the HTTP layer's exceptions are translated into these at the boundary.

The classes live in :mod:`klinestore.ingest.protocol.errors`, so the pure protocol (and the
simulator built on it) stands alone; this module is their public name.
"""

from __future__ import annotations

from klinestore.ingest.protocol.errors import (
    ArchiveError,
    Banned,
    ControlError,
    IngestError,
    PlanError,
    ProtocolError,
    RateLimited,
    RestError,
)

__all__ = ["ArchiveError", "Banned", "ControlError", "IngestError", "PlanError", "ProtocolError", "RateLimited", "RestError"]
