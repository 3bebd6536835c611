"""What the exchange publishes about a symbol: its decimals, tick and lot, and its parameters.

A generated symbol's numbers come from its name and the seed: BTC trades near 60 000 with a
0.10 tick and 0.001 lots, DOGE near 0.15 with whole lots, an unknown name gets a price drawn
log-uniformly. Everything downstream prints numbers through the spec, so decimals are fixed
per symbol as on Binance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from klinestore.sim.fixed import fmt, rescale
from klinestore.sim.hashing import mix, name_hash

#: Known base assets and roughly where they trade, so demos look familiar.
KNOWN_PRICES: dict[str, float] = {
    "BTC": 62_000.0, "ETH": 3_100.0, "BNB": 580.0, "SOL": 150.0, "XRP": 0.55, "DOGE": 0.14,
    "ADA": 0.45, "AVAX": 32.0, "LINK": 15.0, "DOT": 6.5, "LTC": 80.0, "TRX": 0.12, "MATIC": 0.7,
    "BCH": 420.0, "ATOM": 8.0, "NEAR": 5.5, "UNI": 9.0, "APT": 8.5, "ARB": 1.0, "OP": 2.2,
    "FIL": 5.0, "ETC": 25.0, "SUI": 1.1, "PEPE": 0.000012, "1000PEPE": 0.012, "SHIB": 0.000024,
    "1000SHIB": 0.024, "WIF": 2.5, "TON": 6.5, "XLM": 0.11, "AAVE": 95.0, "INJ": 25.0,
}
QUOTE_ASSETS = ("USDT", "USDC", "BUSD", "USD")
#: Binance's deliveryDate for perpetual contracts (2100-12-25).
PERPETUAL_DELIVERY_MS = 4_133_404_800_000
#: Binance USD-M futures launched on 2019-09-08; generated symbols were listed after it.
FUTURES_LAUNCH_MS = 1_567_900_800_000
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """A symbol as the exchange describes it; prices/quantities/quotes are integer units."""

    symbol: str
    base_asset: str
    quote_asset: str
    price_decimals: int
    qty_decimals: int
    quote_decimals: int
    tick_units: int
    step_units: int = 1

    def price(self, units: int) -> str:
        return fmt(units, self.price_decimals)

    def qty(self, units: int) -> str:
        return fmt(units, self.qty_decimals)

    def quote(self, units: int) -> str:
        return fmt(units, self.quote_decimals)

    def quote_of(self, price_units: int, qty_units: int) -> int:
        """Quote units of a trade (exact when quote decimals = price + quantity decimals)."""
        return rescale(price_units * qty_units, self.price_decimals + self.qty_decimals, self.quote_decimals)

    @property
    def tick_size(self) -> str:
        return self.price(self.tick_units)

    @property
    def step_size(self) -> str:
        return self.qty(self.step_units)


@dataclass(frozen=True, slots=True)
class MarketParams:
    """How a generated symbol trades: its price level, volatility and activity."""

    base_price: float
    sigma_minute: float  # log-price volatility per minute
    aggs_per_minute: float  # mean aggregated trades (taker orders) per minute
    trades_per_agg: float  # mean trades per aggregated trade
    mean_lots: float  # mean quantity of one aggregated trade, in lots
    empty_start: float  # chance that a quiet (no-trade) spell starts in a minute
    empty_stay: float  # chance that a quiet spell goes on for another minute
    onboard_ms: int  # when the symbol was listed (before the simulated market starts)


def base_asset(symbol: str) -> tuple[str, str]:
    """Split ``BTCUSDT`` into (``BTC``, ``USDT``); unknown quotes default to USDT."""
    head = symbol.split("_", 1)[0]
    for quote in QUOTE_ASSETS:
        if head.endswith(quote) and len(head) > len(quote):
            return head[: -len(quote)], quote
    return head, "USDT"


def _unit(seed: int, key: int, salt: int) -> float:
    """A stable float in [0, 1) from the seed, a symbol key and a salt."""
    return (mix(seed * 1_000_003 + key + salt * 0x51ED27) >> 11) / float(1 << 53)


def generated_symbol(
    symbol: str, seed: int, activity: float = 1.0, *, quiet: bool = False
) -> tuple[SymbolSpec, MarketParams]:
    """The spec and market parameters of a generated symbol, from its name and the seed.

    A ``quiet`` symbol trades in few minutes an hour (quiet spells start almost every minute
    and last about half an hour), like the many perpetuals that go minutes without a trade.
    """
    key = name_hash(symbol)
    base, quote = base_asset(symbol)
    known = KNOWN_PRICES.get(base)
    if known is not None:
        price = known * math.exp(0.2 * (_unit(seed, key, 1) - 0.5))
    else:
        price = 10 ** (-3 + 6 * _unit(seed, key, 1))
    tick_exp = math.floor(math.log10(price)) - 5
    price_decimals = max(0, -tick_exp)
    tick_units = 1
    if price >= 10_000:  # BTC-like: one more decimal than the tick (0.10 at pricePrecision 2)
        price_decimals, tick_units = price_decimals + 1, 10
    qty_decimals = min(3, max(0, math.ceil(math.log10(price)) - 2))
    lot_value = price / 10**qty_decimals
    notional = 300 + 3000 * _unit(seed, key, 2)
    spec = SymbolSpec(
        symbol=symbol,
        base_asset=base,
        quote_asset=quote,
        price_decimals=price_decimals,
        qty_decimals=qty_decimals,
        quote_decimals=price_decimals + qty_decimals,
        tick_units=tick_units,
    )
    params = MarketParams(
        base_price=price,
        sigma_minute=0.0006 + 0.0008 * _unit(seed, key, 3),
        aggs_per_minute=activity * (12 + 24 * _unit(seed, key, 4) + (12 if known else 0)),
        trades_per_agg=1.5 + 2.0 * _unit(seed, key, 5),
        mean_lots=max(1.0, notional / lot_value),
        empty_start=0.9 if quiet else 0.008 + 0.012 * _unit(seed, key, 6),
        empty_stay=0.97 if quiet else 0.35,
        onboard_ms=FUTURES_LAUNCH_MS + int(_unit(seed, key, 7) * 1200) * _DAY_MS,
    )
    return spec, params
