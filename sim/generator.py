"""The generated market: trades for any hour of any symbol, as a pure function of the seed.

Prices follow a three-level Brownian bridge: daily anchors drawn independently around the
symbol's price level, hourly points bridged between them, minute points bridged between
those, trades scattered around the minute path. Each level is seeded by (seed, symbol,
index) alone, so the hour 2024-05-01T13 is the same whether it is built first or last, at
speed 1 or 1000, with or without subscribers.

Trade ids must be contiguous across hours (clients watch aggTrade ids for gaps) without
replaying history: every day holds the same number of aggregated trades and trades, split
over its hours and minutes at random, so an hour's first id is arithmetic.

Quiet spells (minutes without trades, 1-3 %) start at random and sometimes last a few
minutes; an hour's first minute always trades, so an hour is self-contained.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from klinestore.core.intervals import MINUTE_MS
from klinestore.sim.chunk import HOUR_MS, Chunk, Trades
from klinestore.sim.hashing import name_hash, rng
from klinestore.sim.instruments import MarketParams, SymbolSpec, generated_symbol

_DAY_MS = 24 * HOUR_MS
_ANCHOR_SIGMA = 0.03  # spread of daily price anchors around the symbol's level
_NOISE = 0.3  # trade-price noise around the minute path, in minute sigmas
_ANCHOR, _DAY, _HOUR = 0, 1, 2  # rng salts


@dataclass(frozen=True, slots=True)
class _Day:
    log_anchors: np.ndarray  # 25 hourly log prices (hour 0 .. 24)
    aggs: np.ndarray  # aggregated trades per hour (24)
    extra: np.ndarray  # trades beyond one per aggregated trade, per hour (24)
    agg_base: np.ndarray  # first aggregated-trade id of each hour (24)
    trade_base: np.ndarray  # first trade id of each hour (24)


class GeneratedSource:
    """Builds hours of generated trades; symbols are made up from name and seed on demand."""

    def __init__(self, seed: int, activity: float = 1.0, quiet: frozenset[str] = frozenset()) -> None:
        self.seed = seed
        self.activity = activity
        self.quiet = quiet
        self._symbols: dict[str, tuple[SymbolSpec, MarketParams, int]] = {}
        self._days: OrderedDict[tuple[str, int], _Day] = OrderedDict()

    def spec(self, symbol: str) -> SymbolSpec:
        return self._symbol(symbol)[0]

    def params(self, symbol: str) -> MarketParams:
        return self._symbol(symbol)[1]

    def typical_qty(self, symbol: str) -> float:
        """Mean quantity of an aggregated trade, in quantity units (sizes the order book)."""
        spec, params, _ = self._symbol(symbol)
        return params.mean_lots * spec.step_units

    def _symbol(self, symbol: str) -> tuple[SymbolSpec, MarketParams, int]:
        found = self._symbols.get(symbol)
        if found is None:
            spec, params = generated_symbol(symbol, self.seed, self.activity, quiet=symbol in self.quiet)
            found = self._symbols[symbol] = (spec, params, name_hash(symbol))
        return found

    def _per_day(self, params: MarketParams) -> tuple[int, int]:
        aggs = max(1440 + 24, round(params.aggs_per_minute * 1440))
        return aggs, round(aggs * (params.trades_per_agg - 1))

    def _anchor(self, key: int, params: MarketParams, day: int) -> float:
        z = rng(self.seed, key, _ANCHOR, day).standard_normal()
        return math.log(params.base_price) + _ANCHOR_SIGMA * float(z)

    def _day(self, symbol: str, day: int) -> _Day:
        cached = self._days.get((symbol, day))
        if cached is not None:
            self._days.move_to_end((symbol, day))
            return cached
        _, params, key = self._symbol(symbol)
        g = rng(self.seed, key, _DAY, day)
        a0, a1 = self._anchor(key, params, day), self._anchor(key, params, day + 1)
        anchors = a0 + (a1 - a0) * np.arange(25) / 24 + _bridge(g, params.sigma_minute * math.sqrt(60), 24)
        weights = g.lognormal(0.0, 0.35, 24)
        weights /= weights.sum()
        per_day, extra_per_day = self._per_day(params)
        aggs = 60 + g.multinomial(per_day - 1440, weights)
        extra = g.multinomial(extra_per_day, weights)
        id0 = (key % 997 + 1) * 10**9
        agg_base = id0 + day * per_day + np.concatenate(([0], np.cumsum(aggs)[:-1]))
        trade_base = 2 * id0 + day * (per_day + extra_per_day) + np.concatenate(([0], np.cumsum(aggs + extra)[:-1]))
        found = self._days[(symbol, day)] = _Day(anchors, aggs, extra, agg_base, trade_base)
        if len(self._days) > 4096:
            self._days.popitem(last=False)
        return found

    def build(self, symbol: str, hour_ms: int, onboard_ms: int | None = None) -> Chunk:
        """The hour starting at ``hour_ms``; the minute of ``onboard_ms`` always trades."""
        spec, params, key = self._symbol(symbol)
        hour = hour_ms // HOUR_MS
        day, j = divmod(hour, 24)
        d = self._day(symbol, day)
        g = rng(self.seed, key, _HOUR, hour)
        quiet = _quiet_minutes(g.random(60), params)
        if onboard_ms is not None and hour_ms <= onboard_ms < hour_ms + HOUR_MS:
            quiet[(onboard_ms - hour_ms) // MINUTE_MS] = False
        active = ~quiet
        weights = g.lognormal(0.0, 0.6, 60) * active
        n_groups = int(d.aggs[j])
        counts = active.astype(np.int64) + g.multinomial(n_groups - int(active.sum()), weights / weights.sum())
        path = d.log_anchors[j] + (d.log_anchors[j + 1] - d.log_anchors[j]) * np.arange(61) / 60
        path = path + _bridge(g, params.sigma_minute, 60)
        minute = np.repeat(np.arange(60, dtype=np.int64), counts)
        offset = g.integers(0, MINUTE_MS, n_groups, dtype=np.int64)
        order = np.argsort(minute * MINUTE_MS + offset, kind="stable")
        minute, offset = minute[order], offset[order]
        tau = offset / MINUTE_MS
        noise = g.normal(0.0, 1.0, n_groups)
        log_price = path[minute] + (path[minute + 1] - path[minute]) * tau + _NOISE * params.sigma_minute * noise
        tick_value = spec.tick_units / 10**spec.price_decimals
        price = np.maximum(np.rint(np.exp(log_price) / tick_value), 1).astype(np.int64) * spec.tick_units
        lots = np.maximum(np.rint(g.lognormal(math.log(params.mean_lots) - 0.5, 1.0, n_groups)), 1).astype(np.int64)
        maker = g.random(n_groups) < 0.5 - 0.3 * np.tanh(noise)
        ntr = 1 + g.multinomial(int(d.extra[j]), np.full(n_groups, 1.0 / n_groups))
        qty = np.maximum(lots, ntr) * spec.step_units  # every trade of the group fills at least a lot
        last_tid = int(d.trade_base[j]) + np.cumsum(ntr) - 1
        trades = Trades(
            time=hour_ms + minute * MINUTE_MS + offset,
            price=price,
            qty=qty,
            quote=price * qty,
            maker=maker,
            agg_id=int(d.agg_base[j]) + np.arange(n_groups, dtype=np.int64),
            first_tid=last_tid - ntr + 1,
            last_tid=last_tid,
        )
        return Chunk(hour_ms, trades)


def _bridge(g: np.random.Generator, sigma: float, steps: int) -> np.ndarray:
    """A Brownian bridge of ``steps`` steps: 0 at both ends, ``steps + 1`` points."""
    walk = np.concatenate(([0.0], np.cumsum(g.normal(0.0, sigma, steps))))
    return walk - walk[-1] * np.arange(steps + 1) / steps


def _quiet_minutes(draws: np.ndarray, params: MarketParams) -> np.ndarray:
    """Minutes without trades: spells start with ``empty_start`` and go on with ``empty_stay``."""
    quiet = np.zeros(60, dtype=bool)
    state = False
    for m in range(1, 60):
        state = bool(draws[m] < (params.empty_stay if state else params.empty_start))
        quiet[m] = state
    return quiet
