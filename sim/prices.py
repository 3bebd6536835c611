"""Mark price, index price and funding as pure functions of the market.

One definition serves the ``markPrice`` streams, ``premiumIndex``, ``fundingRate``, the mark and
index klines and the ground truth, so they cannot disagree:

- the index price at second ``s`` is the last trade price at or before ``s`` (no spot basket);
- the mark price is the index with a premium within ±0.05 %, drawn per second from (symbol, s);
- funding is settled every 8 h at 00:00, 08:00 and 16:00 UTC; the rate charged at ``F`` is drawn
  from (symbol, F) and is the ``r`` every mark-price update between ``F − 8 h`` and ``F`` shows
  (with ``T = F``); the ``markPrice`` of the funding event is the mark price at second ``F``.

Prices live on the whole second (the ``@1s`` stream pushes at ``E = s``), in units of
``10^-decimals`` with at least 8 decimals as Binance prints them. A mark (or index) kline is the
OHLC of the 1 s prices of its minute (Binance's markPriceKlines rule); its ninth field counts
the seconds sampled. Higher intervals fold the minutes: first open, max, min, last close.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from klinestore.core.intervals import HOUR_MS, MINUTE_MS, bar_close, bar_open, next_open
from klinestore.sim.fixed import fmt
from klinestore.sim.hashing import mix, mix_array, name_hash
from klinestore.sim.market import Market

FUNDING_MS = 8 * HOUR_MS
MIN_MARK_DECIMALS = 8
_SECOND_MS = 1000
_BLOCK_MINUTES = 1440  # minutes computed per numpy block (86 400 seconds)


def next_funding(t: int) -> int:
    """The funding time after ``t`` (00:00, 08:00, 16:00 UTC; ``t`` itself belongs to the next)."""
    return (t // FUNDING_MS + 1) * FUNDING_MS


class MarkState(NamedTuple):
    """One ``markPriceUpdate`` / ``premiumIndex`` reading, prices in ``decimals``."""

    time: int
    mark: int
    index: int
    settle: int
    rate: int  # funding rate in 1e-8
    next_funding: int
    decimals: int


class PriceBar(NamedTuple):
    open_time: int
    close_time: int
    open: int
    high: int
    low: int
    close: int
    seconds: int  # 1 s prices sampled

    def row(self, decimals: int) -> list[int | str]:
        """The 12-field row of ``markPriceKlines`` / ``indexPriceKlines``."""
        p = [fmt(v, decimals) for v in (self.open, self.high, self.low, self.close)]
        return [self.open_time, *p, "0", self.close_time, "0", self.seconds, "0", "0", "0"]


@dataclass(frozen=True, slots=True)
class Funding:
    symbol: str
    time: int
    rate: int  # 1e-8
    mark: int
    decimals: int

    def body(self) -> dict[str, int | str]:
        return {"symbol": self.symbol, "fundingRate": fmt(self.rate, 8), "fundingTime": self.time,
                "markPrice": fmt(self.mark, self.decimals)}


class Prices:
    """Mark, index and funding of every symbol of one market."""

    def __init__(self, market: Market, typical_qty: Callable[[str], float]) -> None:
        self.market = market
        self._typical_qty = typical_qty

    def decimals(self, symbol: str) -> int:
        return max(MIN_MARK_DECIMALS, self.market.spec(symbol).price_decimals)

    # --- per second -----------------------------------------------------------------------

    def index_at(self, symbol: str, seconds: np.ndarray) -> np.ndarray:
        scale = 10 ** (self.decimals(symbol) - self.market.spec(symbol).price_decimals)
        return self.market.prices_at(symbol, seconds) * scale

    def mark_at(self, symbol: str, seconds: np.ndarray) -> np.ndarray:
        index = self.index_at(symbol, seconds)
        draws = mix_array(np.uint64(name_hash(symbol)) ^ (seconds // _SECOND_MS).astype(np.uint64))
        premium = (draws % np.uint64(2001)).astype(np.int64) - 1000  # within ±0.05 %
        return index + index * premium // 2_000_000

    def rate(self, symbol: str, funding_ms: int) -> int:
        """The funding rate charged at ``funding_ms``, in 1e-8: −0.0001 .. 0.0003, so about one
        period in four pays shorts (negative rates, which clients must parse and store)."""
        return -10_000 + mix(name_hash(symbol) ^ funding_ms) % 40_001

    def state(self, symbol: str, t: int) -> MarkState:
        """What the mark-price stream shows at ``t`` (floored to its second)."""
        s = t // _SECOND_MS * _SECOND_MS
        at = np.array([s], dtype=np.int64)
        mark, index = int(self.mark_at(symbol, at)[0]), int(self.index_at(symbol, at)[0])
        funding = next_funding(s)
        return MarkState(s, mark, index, (index + mark) // 2, self.rate(symbol, funding), funding, self.decimals(symbol))

    def open_interest(self, symbol: str, t: int) -> int:
        """Open interest in quantity units: a slow daily swing around 20 000 typical trades."""
        spec = self.market.spec(symbol)
        phase = (mix(name_hash(symbol)) % 1000) / 1000
        level = 20_000 * self._typical_qty(symbol) * (1 + 0.25 * np.sin(2 * np.pi * (t / 86_400_000 + phase)))
        return max(1, round(level / spec.step_units)) * spec.step_units

    # --- funding ----------------------------------------------------------------------------

    def fundings(self, symbol: str, start: int, end: int, now: int) -> list[Funding]:
        """Funding events at times in ``[start, end]`` that happened by ``now`` while trading."""
        span = self.market.span(symbol)
        if span is None:
            return []
        lo = max(start, span.first_ms)
        hi = min(end, now) if span.end_ms is None else min(end, now, span.end_ms - 1)
        first = -(-lo // FUNDING_MS) * FUNDING_MS
        times = list(range(first, hi + 1, FUNDING_MS))
        if not times:
            return []
        marks = self.mark_at(symbol, np.array(times, dtype=np.int64)).tolist()
        d = self.decimals(symbol)
        return [Funding(symbol, f, self.rate(symbol, f), m, d) for f, m in zip(times, marks)]

    # --- klines -----------------------------------------------------------------------------

    def bars(self, symbol: str, kind: str, interval: str, first_open: int, last_open: int, now: int) -> list[PriceBar]:
        """``mark`` or ``index`` bars opening in ``[first_open, last_open]`` at ``now`` (the last may
        be open): only seconds inside the symbol's market and not after ``now`` are sampled."""
        span = self.market.span(symbol)
        if span is None:
            return []
        start = max(bar_open(max(first_open, span.first_ms), interval), bar_open(span.first_ms, interval))
        if start < first_open:
            start = next_open(start, interval)
        stop = next_open(bar_open(min(last_open, now), interval), interval)
        if span.end_ms is not None:
            stop = min(stop, span.end_ms)
        lo_minute = max(start, span.first_ms) // MINUTE_MS * MINUTE_MS
        out: list[PriceBar] = []
        acc: PriceBar | None = None
        m = lo_minute
        while m < stop:
            block_end = min(stop, m + _BLOCK_MINUTES * MINUTE_MS)
            for bar in self._minutes(symbol, kind, m, block_end, now):
                opened = bar_open(bar.open_time, interval)
                if acc is not None and acc.open_time != opened:
                    out.append(acc)
                    acc = None
                acc = _fold(acc, bar, opened, interval)
            m = block_end
        if acc is not None:
            out.append(acc)
        return [b for b in out if first_open <= b.open_time <= last_open]

    def _minutes(self, symbol: str, kind: str, start: int, end: int, now: int) -> list[PriceBar]:
        """1m bars of minutes in ``[start, end)`` with at least one second at or before ``now``."""
        end = min(end, now // MINUTE_MS * MINUTE_MS + MINUTE_MS)
        n = (end - start) // MINUTE_MS
        if n <= 0:
            return []
        seconds = start + _SECOND_MS * np.arange(n * 60, dtype=np.int64)
        prices = (self.mark_at if kind == "mark" else self.index_at)(symbol, seconds).reshape(n, 60)
        counts = np.minimum(60, np.maximum(0, (now - start - MINUTE_MS * np.arange(n)) // _SECOND_MS + 1))
        out = []
        for i, count in enumerate(counts.tolist()):
            if count <= 0:
                continue
            row = prices[i, :count]
            open_time = start + i * MINUTE_MS
            out.append(PriceBar(open_time, open_time + MINUTE_MS - 1, int(row[0]), int(row.max()), int(row.min()),
                                int(row[-1]), count))
        return out


def _fold(acc: PriceBar | None, minute: PriceBar, open_time: int, interval: str) -> PriceBar:
    if acc is None:
        return minute._replace(open_time=open_time, close_time=bar_close(open_time, interval))
    return acc._replace(high=max(acc.high, minute.high), low=min(acc.low, minute.low), close=minute.close,
                        seconds=acc.seconds + minute.seconds)
