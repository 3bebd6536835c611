"""Talking to the exchange and holding live state: connections, parsing, buffers, order books.

The public surface is re-exported here. The heavy parts (websockets, httpx, polars) load on
first use, so importing ``klinestore.ingest.protocol`` (the simulator does) stays cheap.
"""

from klinestore.core.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "connection": ("ConnState",),
    "errors": ("Banned", "ControlError", "IngestError", "PlanError", "ProtocolError", "RateLimited", "RestError"),
    "eventlog": ("EventLog", "Transition"),
    "feed": ("Feed",),
    "klines": ("Gap", "KlineSeries"),
    "ledger": ("ApiLedger",),
    "listings": ("ListingChange",),
    "markprice": ("Mark",),
    "orderbook": ("OrderBook",),
    "sink": ("BarSink", "MemorySink"),
    "state": ("MarketState", "UnknownSeries"),
})
