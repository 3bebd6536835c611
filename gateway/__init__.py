"""The local market-data gateway: many bots share one collector through a Binance-compatible API.

``Gateway`` serves, from the service's own store and live state, Binance's REST market
endpoints and WebSocket streams (docs/gateway.md); ``GatewayConfig`` is its config section.

Names load on first use (:func:`klinestore.core.lazy.lazy_exports`).
"""

from klinestore.core.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "config": ("GatewayConfig",),
    "errors": ("GatewayError", "GatewayStartError"),
    "server": ("Gateway",),
})
