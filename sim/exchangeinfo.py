"""The ``/fapi/v1/exchangeInfo`` body, laid out as Binance's (fields and filters in its order).

The layout follows the recorded response in ``../shared/data/um/rest/`` (a test compares the
keys of every symbol and filter with it): PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE,
MAX_NUM_ORDERS (200), MAX_NUM_ALGO_ORDERS (10), MIN_NOTIONAL (5 of the quote asset) and
PERCENT_PRICE (0.85 .. 1.15). Clients read ``MIN_NOTIONAL.notional`` as the minimum order cost.
"""

from __future__ import annotations

from typing import Any

from klinestore.sim.instruments import PERPETUAL_DELIVERY_MS, SymbolSpec
from klinestore.sim.market import Market

MIN_NOTIONAL = "5"
MAX_NUM_ORDERS = 200
MAX_NUM_ALGO_ORDERS = 10
ORDER_TYPES = ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"]


def filters(spec: SymbolSpec) -> list[dict[str, Any]]:
    tick, step = spec.tick_size, spec.step_size
    return [
        {"minPrice": tick, "maxPrice": spec.price(spec.tick_units * 10**9), "filterType": "PRICE_FILTER", "tickSize": tick},
        {"stepSize": step, "filterType": "LOT_SIZE", "maxQty": spec.qty(spec.step_units * 10**9), "minQty": step},
        {"stepSize": step, "filterType": "MARKET_LOT_SIZE", "maxQty": spec.qty(spec.step_units * 10**8), "minQty": step},
        {"limit": MAX_NUM_ORDERS, "filterType": "MAX_NUM_ORDERS"},
        {"limit": MAX_NUM_ALGO_ORDERS, "filterType": "MAX_NUM_ALGO_ORDERS"},
        {"notional": MIN_NOTIONAL, "filterType": "MIN_NOTIONAL"},
        {"multiplierDown": "0.8500", "multiplierUp": "1.1500", "multiplierDecimal": "4", "filterType": "PERCENT_PRICE"},
    ]


def exchange_info(market: Market, now: int, weight_limit: int) -> dict[str, Any]:
    symbols = []
    quotes: dict[str, None] = {}
    for symbol in market.listings.visible(now):
        spec = market.spec(symbol)
        window = market.listings.window(symbol)
        assert window is not None
        quotes[spec.quote_asset] = None
        symbols.append({
            "symbol": symbol, "pair": symbol, "contractType": "PERPETUAL",
            "deliveryDate": PERPETUAL_DELIVERY_MS, "onboardDate": window.onboard_ms,
            "status": market.listings.status(symbol, now),
            "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
            "baseAsset": spec.base_asset, "quoteAsset": spec.quote_asset, "marginAsset": spec.quote_asset,
            "pricePrecision": spec.price_decimals, "quantityPrecision": spec.qty_decimals,
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
            "settlePlan": 0, "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
            "filters": filters(spec),
            "orderTypes": ORDER_TYPES,
            "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
        })
    return {
        "timezone": "UTC",
        "serverTime": now,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": weight_limit},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": q, "marginAvailable": True, "autoAssetExchange": "-10000"} for q in quotes],
        "symbols": symbols,
    }
