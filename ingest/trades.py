"""The aggTrade window per symbol: the newest trades, bounded by count and by exchange time.

Seed v6.4 §7.2: at most ``aggtrade_max_size`` trades (1000) and none older than
``aggtrade_time_window`` (60 s) of *exchange* time. The count bound is the memory bound (a
preallocated ring); the time bound is applied when reading, against the exchange clock.
Trades are keyed by aggregate id: a repeated id is a duplicate (rotation overlap, a
duplicated frame) and counted; an older id that is missing (out-of-order delivery) is
inserted in order.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl

from klinestore.ingest.protocol.events import AggTradeEvent
from klinestore.ingest.ring import Ring

TRADE_DTYPE = np.dtype(
    [
        ("id", "<i8"), ("time", "<i8"), ("price", "<f8"), ("qty", "<f8"), ("first_id", "<i8"),
        ("last_id", "<i8"), ("buyer_maker", "?"),
    ]
)


class TradeWindow:
    """Recent aggregate trades of one symbol."""

    __slots__ = ("symbol", "window_ms", "ring", "rejected", "_last_id")

    def __init__(self, symbol: str, capacity: int, window_s: float, *, rejected: Counter[str] | None = None) -> None:
        self.symbol = symbol
        self.window_ms = int(window_s * 1000)
        self.ring = Ring(TRADE_DTYPE, capacity, key="id")
        self.rejected: Counter[str] = Counter() if rejected is None else rejected
        self._last_id = -1

    def add(self, ev: AggTradeEvent) -> str | None:
        """Take a trade; return the reject reason (``duplicate``, ``stale``) or None."""
        a = ev.a
        row = (a, ev.T, ev.p, ev.q, ev.f, ev.l, ev.m)
        if a > self._last_id:
            self.ring.append(row)
            self._last_id = a
            return None
        if self.ring.contains(a):
            self.rejected["duplicate_trade"] += 1
            return "duplicate_trade"
        if len(self.ring) and a < self.ring.key_at(0):
            self.rejected["stale_trade"] += 1
            return "stale_trade"
        self.ring.merge(np.array([row], dtype=TRADE_DTYPE))
        return None

    @property
    def last_id(self) -> int:
        return self._last_id

    def recent(self, now_ms: int | None) -> np.ndarray:
        """Trades within the time window before ``now_ms`` (all kept trades when None)."""
        rows = self.ring.tail()
        if now_ms is None:
            return rows
        return rows[rows["time"] > now_ms - self.window_ms]

    def frame(self, now_ms: int | None) -> pl.DataFrame:
        rows = self.recent(now_ms)
        return pl.DataFrame(
            {
                "agg_id": rows["id"],
                "time": pl.Series(np.ascontiguousarray(rows["time"])).cast(pl.Datetime("ms", "UTC")),
                "price": np.ascontiguousarray(rows["price"]),
                "qty": np.ascontiguousarray(rows["qty"]),
                "first_trade_id": np.ascontiguousarray(rows["first_id"]),
                "last_trade_id": np.ascontiguousarray(rows["last_id"]),
                "buyer_maker": np.ascontiguousarray(rows["buyer_maker"]),
            }
        )
