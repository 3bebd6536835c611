"""Talking to the exchange and holding live state: connections, parsing, buffers, order books.

The public surface is re-exported here. The heavy parts (websockets, httpx, polars) load on
first use, so importing ``ingest.protocol`` (the simulator does) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ingest.errors import Banned, ControlError, IngestError, PlanError, ProtocolError, RateLimited, RestError

if TYPE_CHECKING:
    from ingest.connection import ConnState
    from ingest.eventlog import EventLog, Transition
    from ingest.feed import Feed
    from ingest.klines import Gap, KlineSeries
    from ingest.ledger import ApiLedger
    from ingest.listings import ListingChange
    from ingest.markprice import Mark
    from ingest.orderbook import OrderBook
    from ingest.sink import BarSink, MemorySink
    from ingest.state import MarketState, UnknownSeries

_LAZY = {
    "ApiLedger": "ingest.ledger", "BarSink": "ingest.sink", "ConnState": "ingest.connection",
    "EventLog": "ingest.eventlog", "Feed": "ingest.feed", "Gap": "ingest.klines", "KlineSeries": "ingest.klines",
    "ListingChange": "ingest.listings", "Mark": "ingest.markprice", "MarketState": "ingest.state",
    "MemorySink": "ingest.sink", "OrderBook": "ingest.orderbook", "Transition": "ingest.eventlog",
    "UnknownSeries": "ingest.state",
}

__all__ = [
    "ApiLedger", "Banned", "BarSink", "ConnState", "ControlError", "EventLog", "Feed", "Gap", "IngestError",
    "KlineSeries", "ListingChange", "Mark", "MarketState", "MemorySink", "OrderBook", "PlanError", "ProtocolError",
    "RateLimited", "RestError", "Transition", "UnknownSeries",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ingest' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
