"""A Binance-compatible USD-M futures exchange simulator (market data), on loopback.

The demo runs on it and every test of the service talks to it: routed WebSocket streams
with Binance's control messages and limits, REST klines/depth/exchangeInfo with request
weights, a deterministic market (or replayed archives) on a fast-forward clock, ground
truth, and fault injection. See ``docs/simulator.md``.
"""

from klinestore.sim.config import ListingEvent, SimConfig
from klinestore.sim.errors import FaultError, ListingError, ReplayError, SimConfigError, SimError
from klinestore.sim.server import Simulator
from klinestore.sim.thread import SimThread

__all__ = [
    "FaultError", "ListingError", "ListingEvent", "ReplayError", "SimConfig", "SimConfigError", "SimError",
    "SimThread", "Simulator",
]
