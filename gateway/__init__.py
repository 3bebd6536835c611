"""The local market-data gateway: many bots share one collector through a Binance-compatible API.

``Gateway`` serves, from the service's own store and live state, Binance's REST market
endpoints and WebSocket streams (docs/gateway.md); ``GatewayConfig`` is its config section.
"""

from klinestore.gateway.config import GatewayConfig
from klinestore.gateway.errors import GatewayError, GatewayStartError
from klinestore.gateway.server import Gateway

__all__ = ["Gateway", "GatewayConfig", "GatewayError", "GatewayStartError"]
