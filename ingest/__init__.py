"""Talking to the exchange and holding live state: connections, parsing, buffers, order books.

The public surface is re-exported here. The heavy parts (websockets, httpx, polars) load on
first use, so importing ``klinestore.ingest.protocol`` (the simulator does) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from klinestore.ingest.errors import Banned, ControlError, IngestError, PlanError, ProtocolError, RateLimited, RestError

if TYPE_CHECKING:
    from klinestore.ingest.connection import ConnState
    from klinestore.ingest.eventlog import EventLog, Transition
    from klinestore.ingest.feed import Feed
    from klinestore.ingest.klines import Gap, KlineSeries
    from klinestore.ingest.ledger import ApiLedger
    from klinestore.ingest.listings import ListingChange
    from klinestore.ingest.markprice import Mark
    from klinestore.ingest.orderbook import OrderBook
    from klinestore.ingest.sink import BarSink, MemorySink
    from klinestore.ingest.state import MarketState, UnknownSeries

_PKG = "klinestore.ingest"
_LAZY = {
    "ApiLedger": "ledger", "BarSink": "sink", "ConnState": "connection", "EventLog": "eventlog", "Feed": "feed",
    "Gap": "klines", "KlineSeries": "klines", "ListingChange": "listings", "Mark": "markprice",
    "MarketState": "state", "MemorySink": "sink", "OrderBook": "orderbook", "Transition": "eventlog",
    "UnknownSeries": "state",
}

__all__ = [
    "ApiLedger", "Banned", "BarSink", "ConnState", "ControlError", "EventLog", "Feed", "Gap", "IngestError",
    "KlineSeries", "ListingChange", "Mark", "MarketState", "MemorySink", "OrderBook", "PlanError", "ProtocolError",
    "RateLimited", "RestError", "Transition", "UnknownSeries",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'klinestore.ingest' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{_PKG}.{module}"), name)
