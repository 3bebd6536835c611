"""A Binance-compatible USD-M futures exchange simulator (market data), on loopback.

The demo runs on it and every test of the service talks to it: routed WebSocket streams
with Binance's control messages and limits, REST klines/depth/exchangeInfo with request
weights, a deterministic market (or replayed archives) on a fast-forward clock, ground
truth, and fault injection. See ``docs/simulator.md``.

Names load on first use (:func:`klinestore.core.lazy.lazy_exports`).
"""

from klinestore.core.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "config": ("ListingEvent", "SimConfig"),
    "errors": ("FaultError", "ListingError", "ReplayError", "SimConfigError", "SimError"),
    "server": ("Simulator",),
    "thread": ("SimThread",),
})
