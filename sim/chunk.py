"""One hour of one symbol: its aggregated trades and its 1m bars, with prefix sums.

An hour is the unit the market is built and cached in. Prefix sums over the trades make
the open bar at any instant O(1) (one binary search), which is what lets the simulator push
kline updates every 250 ms of exchange time for hundreds of streams without loops over
trades.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from klinestore.core.intervals import MINUTE_MS
from klinestore.sim.bars import Bar, empty_bar

HOUR_MS = 60 * MINUTE_MS
_I64 = np.int64


@dataclass(eq=False, slots=True)
class Trades:
    """Aggregated trades (one taker order at one price), sorted by time.

    ``maker`` is Binance's ``m``: the buyer was the maker, so the taker sold.
    """

    time: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    quote: np.ndarray
    maker: np.ndarray
    agg_id: np.ndarray
    first_tid: np.ndarray
    last_tid: np.ndarray

    def __len__(self) -> int:
        return len(self.time)

    @staticmethod
    def empty() -> Trades:
        z = np.zeros(0, dtype=_I64)
        return Trades(z, z, z, z, np.zeros(0, dtype=bool), z, z, z)


_MINUTE_FIELDS = (
    "open", "high", "low", "close", "volume", "quote", "trades", "taker_volume", "taker_quote",
    "first_id", "last_id", "close_time",
)


@dataclass(eq=False, slots=True)
class Minutes:
    """The 60 one-minute bars of an hour as arrays; ``present`` False is a missing bar."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quote: np.ndarray
    trades: np.ndarray
    taker_volume: np.ndarray
    taker_quote: np.ndarray
    first_id: np.ndarray
    last_id: np.ndarray
    close_time: np.ndarray
    present: np.ndarray

    def bars(self, hour_ms: int) -> list[Bar | None]:
        columns = [getattr(self, f).tolist() for f in _MINUTE_FIELDS]
        present = self.present.tolist()
        out: list[Bar | None] = []
        for i in range(60):
            if not present[i]:
                out.append(None)
                continue
            o, h, lo, c, v, q, n, tv, tq, fi, li, ct = (col[i] for col in columns)
            out.append(Bar(hour_ms + i * MINUTE_MS, ct, o, h, lo, c, v, q, n, tv, tq, fi, li))
        return out


class Chunk:
    """An hour of trades and minutes; read-only once built."""

    __slots__ = (
        "hour_ms", "trades", "minutes", "minute_start", "_cum_qty", "_cum_quote", "_cum_tqty",
        "_cum_tquote", "_cum_n", "_run_max", "_run_min", "_bars", "_times",
    )

    def __init__(self, hour_ms: int, trades: Trades, minutes: Minutes | None = None) -> None:
        self.hour_ms = hour_ms
        self.trades = trades
        t = trades
        self._times = t.time
        edges = hour_ms + MINUTE_MS * np.arange(61, dtype=_I64)
        self.minute_start = np.searchsorted(t.time, edges, side="left").astype(_I64)
        ntr = t.last_tid - t.first_tid + 1
        taker = ~t.maker
        self._cum_qty = _prefix(t.qty)
        self._cum_quote = _prefix(t.quote)
        self._cum_tqty = _prefix(np.where(taker, t.qty, 0))
        self._cum_tquote = _prefix(np.where(taker, t.quote, 0))
        self._cum_n = _prefix(ntr)
        group = (t.time - hour_ms) // MINUTE_MS
        big = int(t.price.max()) + 1 if len(t) else 1
        self._run_max = np.maximum.accumulate(t.price + group * big) - group * big if len(t) else t.price
        self._run_min = np.minimum.accumulate(t.price - group * big) + group * big if len(t) else t.price
        self.minutes = minutes if minutes is not None else self._minutes_from_trades()
        self._bars: list[Bar | None] | None = None

    def _minutes_from_trades(self) -> Minutes:
        """1m bars as the exchange computes them from trades; empty minutes at the last close."""
        start, end = self.minute_start[:-1], self.minute_start[1:]
        nonempty = end > start
        last = np.maximum(end - 1, 0)
        t = self.trades
        if not len(t):
            raise ValueError("a generated hour always has trades")
        close = np.where(nonempty, t.price[last], 0)
        filled = np.maximum.accumulate(np.where(nonempty, np.arange(60), -1))
        close = close[np.maximum(filled, 0)]
        first = np.minimum(start, len(t) - 1)

        def pick(values: np.ndarray, fallback: np.ndarray | int) -> np.ndarray:
            return np.where(nonempty, values, fallback)

        return Minutes(
            open=pick(t.price[first], close),
            high=pick(self._run_max[last], close),
            low=pick(self._run_min[last], close),
            close=close,
            volume=self._cum_qty[end] - self._cum_qty[start],
            quote=self._cum_quote[end] - self._cum_quote[start],
            trades=self._cum_n[end] - self._cum_n[start],
            taker_volume=self._cum_tqty[end] - self._cum_tqty[start],
            taker_quote=self._cum_tquote[end] - self._cum_tquote[start],
            first_id=pick(t.first_tid[first], -1),
            last_id=pick(t.last_tid[last], -1),
            close_time=self.hour_ms + MINUTE_MS * np.arange(1, 61, dtype=_I64) - 1,
            present=np.ones(60, dtype=bool),
        )

    def bars(self) -> list[Bar | None]:
        """The hour's 1m bars (None where a replayed archive has no bar)."""
        if self._bars is None:
            self._bars = self.minutes.bars(self.hour_ms)
        return self._bars

    def last_close(self) -> int | None:
        """Close of the hour's last present minute."""
        for bar in reversed(self.bars()):
            if bar is not None:
                return bar.close
        return None

    def partial_minute(self, t: int, prev_close: Callable[[], int]) -> Bar | None:
        """The 1m bar of the minute holding ``t`` as it stands at ``t`` (trades with time <= t)."""
        m = (t - self.hour_ms) // MINUTE_MS
        minute = self.bars()[m]
        if minute is None:
            return None
        s = int(self.minute_start[m])
        i = int(np.searchsorted(self._times, t, side="right")) - 1
        open_time = minute.open_time
        if i < s:
            if minute.trades == 0:
                return minute
            return empty_bar(open_time, minute.close_time, int(self.minutes.close[m - 1]) if m else prev_close())
        tr = self.trades
        return Bar(
            open_time,
            open_time + MINUTE_MS - 1,
            int(tr.price[s]),
            int(self._run_max[i]),
            int(self._run_min[i]),
            int(tr.price[i]),
            int(self._cum_qty[i + 1] - self._cum_qty[s]),
            int(self._cum_quote[i + 1] - self._cum_quote[s]),
            int(self._cum_n[i + 1] - self._cum_n[s]),
            int(self._cum_tqty[i + 1] - self._cum_tqty[s]),
            int(self._cum_tquote[i + 1] - self._cum_tquote[s]),
            int(tr.first_tid[s]),
            int(tr.last_tid[i]),
        )

    def trade_range(self, after: int, upto: int) -> tuple[int, int]:
        """Indices ``[lo, hi)`` of trades with ``after < time <= upto``."""
        lo = int(np.searchsorted(self._times, after, side="right"))
        hi = int(np.searchsorted(self._times, upto, side="right"))
        return lo, hi

    def next_trade_time(self, after: int) -> int | None:
        i = int(np.searchsorted(self._times, after, side="right"))
        return int(self._times[i]) if i < len(self._times) else None

    def prices_at(self, times: np.ndarray) -> np.ndarray:
        """Last trade price at or before each time (-1 where the hour has none yet)."""
        idx = np.searchsorted(self._times, times, side="right") - 1
        if not len(self._times):
            return np.full(len(times), -1, dtype=_I64)
        return np.where(idx >= 0, self.trades.price[np.maximum(idx, 0)], -1)


def _prefix(values: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values) + 1, dtype=_I64)
    np.cumsum(values, out=out[1:])
    return out
