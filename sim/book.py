"""The order book: a pure function of (symbol, 50 ms step), so diffs and snapshots agree.

At step ``k`` the best bid is the tick of the last trade and the best ask one tick above;
each side spans ``window`` ticks. A price level's quantity is a hash of (price, epoch),
where the level's epoch advances every ``period(price)`` steps (1 to 20 s), and 1 in 8
(price, epoch) pairs is an empty level. Nothing depends on history, so the REST snapshot at
any step is computed directly, and a diff over steps ``(k0, k1]`` is computed from the two
ends: a level changed iff its epoch changed, or it sits where the moving best price could
have added or removed it in between (bands derived from the lowest and highest best price
over the steps). Every such level is sent with its value at ``k1`` (quantity 0 = gone).

Applying Binance's sync algorithm therefore rebuilds this book exactly: a level that is not
in a diff has the same value at every step of that diff's window.

Update ids: ``uid(k) = base + 4k + (hash(k) mod 4)`` rises with ``k`` in uneven steps (as
Binance's do; clients must chain ``pu``, not count), and an event over ``(k0, k1]`` carries
``U = uid(k0 + 1)``, ``u = uid(k1)``, ``pu = uid(k0)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from klinestore.sim.hashing import mix, mix_array, name_hash, unit_floats

STEP_MS = 50
_U64 = np.uint64
_ALWAYS = 2  # the best two levels of each side are never empty


@dataclass(frozen=True, slots=True)
class Levels:
    """Price levels as tick indices and quantities in quantity units (0 removes a level)."""

    ticks: np.ndarray
    qty: np.ndarray


@dataclass(frozen=True, slots=True)
class Snapshot:
    last_update_id: int
    bids: Levels  # best first
    asks: Levels  # best first


@dataclass(frozen=True, slots=True)
class Diff:
    first_update_id: int  # U
    final_update_id: int  # u
    prev_final_update_id: int  # pu
    bids: Levels
    asks: Levels


class BookModel:
    """One symbol's book. ``best_bid_ticks(times)`` gives the best bid tick at each time."""

    def __init__(
        self, symbol: str, seed: int, *, levels: int, mean_qty: float,
        best_bid_ticks: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        self.key = mix(name_hash(symbol) ^ (seed * 0x9E3779B1))
        self.window = int(levels * 1.25) + 16  # 1 in 8 levels is empty: ~9 sigma more than levels
        self.mean_qty = max(1.0, mean_qty)
        self._best = best_bid_ticks
        self._uid_base = (self.key % 1000 + 1) * 10**11
        self._block = 0  # first tick of the cached period/phase block
        self._period = np.zeros(0, dtype=np.int64)
        self._phase = np.zeros(0, dtype=np.int64)

    def update_id(self, k: int) -> int:
        return self._uid_base + 4 * k + (mix(self.key ^ k) & 3)

    def step_of(self, update_id: int) -> int:
        """The step whose update id is ``update_id`` (ids are 4k plus less than 4)."""
        return (update_id - self._uid_base) // 4

    def best_bids(self, k0: int, k1: int) -> np.ndarray:
        return self._best(np.arange(k0, k1 + 1, dtype=np.int64) * STEP_MS)

    def _level_params(self, ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each level's epoch period (a level changes every 2 to 60 s) and phase.

        They depend on the price alone, so a block around the market is hashed once and
        sliced until the price leaves it.
        """
        lo, hi = int(ticks.min()), int(ticks.max())
        if lo < self._block or hi >= self._block + len(self._period):
            self._block = lo - 2 * self.window
            block = np.arange(self._block, hi + 2 * self.window + 1, dtype=np.int64)
            h = mix_array(block.astype(np.uint64) ^ _U64(self.key))
            self._period = (40 + h % _U64(1160)).astype(np.int64)
            self._phase = ((h >> _U64(20)) % self._period.astype(np.uint64)).astype(np.int64)
        i = ticks - self._block
        return self._period[i], self._phase[i]

    def _epochs(self, ticks: np.ndarray, ks: tuple[int, ...]) -> list[np.ndarray]:
        if not len(ticks):
            return [ticks for _ in ks]
        period, phase = self._level_params(ticks)
        return [(k + phase) // period for k in ks]

    def _quantities(self, ticks: np.ndarray, epoch: np.ndarray) -> np.ndarray:
        h = mix_array((ticks.astype(np.uint64) * _U64(0x2545F4914F6CDD1D)) ^ epoch.astype(np.uint64) ^ _U64(self.key))
        qty = np.maximum(1, np.floor(-np.log(unit_floats(h)) * self.mean_qty)).astype(np.int64)
        return np.where(h % _U64(8) == _U64(0), 0, qty)

    def _side(self, ticks: np.ndarray, k: int, best_bid: int, bid: bool) -> np.ndarray:
        """Quantities of ``ticks`` on one side at step ``k`` (0 where absent)."""
        (epoch,) = self._epochs(ticks, (k,))
        qty = self._quantities(ticks, epoch)
        if bid:
            inside = (ticks <= best_bid) & (ticks > best_bid - self.window)
            top = ticks > best_bid - _ALWAYS
        else:
            ask = best_bid + 1
            inside = (ticks >= ask) & (ticks < ask + self.window)
            top = ticks < ask + _ALWAYS
        qty = np.where(top & (qty == 0), np.maximum(1, int(self.mean_qty)), qty)
        return np.where(inside, qty, 0)

    def top(self, k: int) -> tuple[int, int, int, int]:
        """Best bid tick and quantity, best ask tick and quantity at step ``k`` (always present)."""
        best = int(self.best_bids(k, k)[0])
        ticks = np.array([best, best + 1], dtype=np.int64)
        bid = int(self._side(ticks[:1], k, best, True)[0])
        ask = int(self._side(ticks[1:], k, best, False)[0])
        return best, bid, best + 1, ask

    def snapshot(self, k: int, limit: int | None = None) -> Snapshot:
        best = int(self.best_bids(k, k)[0])
        bid_ticks = np.arange(best, best - self.window, -1, dtype=np.int64)
        ask_ticks = np.arange(best + 1, best + 1 + self.window, dtype=np.int64)
        return Snapshot(
            self.update_id(k),
            _present(bid_ticks, self._side(bid_ticks, k, best, True), limit),
            _present(ask_ticks, self._side(ask_ticks, k, best, False), limit),
        )

    def diff(self, k0: int, k1: int, best_bids: np.ndarray | None = None) -> Diff:
        """Every level that may differ between any step of ``(k0, k1]`` and ``k1``."""
        bests = self.best_bids(k0, k1) if best_bids is None else best_bids
        lo, hi, end = int(bests.min()), int(bests.max()), int(bests[-1])
        w = self.window
        ticks = np.arange(lo - w - 2, hi + w + 3, dtype=np.int64)
        e0, e1 = self._epochs(ticks, (k0, k1))
        changed = e0 != e1
        bid_band = ((ticks >= lo - w + 1) & (ticks <= hi - w + 1)) | ((ticks >= lo - _ALWAYS) & (ticks <= hi))
        ask_band = ((ticks >= lo + 1) & (ticks <= hi + _ALWAYS + 1)) | ((ticks >= lo + w) & (ticks <= hi + w))
        bid_union = (ticks > lo - w) & (ticks <= hi)
        ask_union = (ticks >= lo + 1) & (ticks <= hi + w)
        bid_ticks = ticks[bid_union & (changed | bid_band)][::-1]
        ask_ticks = ticks[ask_union & (changed | ask_band)]
        return Diff(
            self.update_id(k0 + 1),
            self.update_id(k1),
            self.update_id(k0),
            Levels(bid_ticks, self._side(bid_ticks, k1, end, True)),
            Levels(ask_ticks, self._side(ask_ticks, k1, end, False)),
        )


def _present(ticks: np.ndarray, qty: np.ndarray, limit: int | None) -> Levels:
    keep = qty > 0
    ticks, qty = ticks[keep], qty[keep]
    if limit is not None:
        ticks, qty = ticks[:limit], qty[:limit]
    return Levels(ticks, qty)


def apply(book: dict[int, int], levels: Levels) -> None:
    """Apply one side of a diff to a ``{tick: qty}`` side of a local book (0 removes)."""
    for tick, qty in zip(levels.ticks.tolist(), levels.qty.tolist()):
        if qty:
            book[tick] = qty
        else:
            book.pop(tick, None)


class Books:
    """One :class:`BookModel` per symbol, made on first use from the market's prices."""

    def __init__(
        self, seed: int, levels: int, *, prices_at: Callable[[str, np.ndarray], np.ndarray],
        tick_units: Callable[[str], int], mean_qty: Callable[[str], float],
    ) -> None:
        self._seed = seed
        self._levels = levels
        self._prices_at = prices_at
        self._tick_units = tick_units
        self._mean_qty = mean_qty
        self._books: dict[str, BookModel] = {}

    def get(self, symbol: str) -> BookModel:
        book = self._books.get(symbol)
        if book is None:
            tick = self._tick_units(symbol)

            def best_bid_ticks(times: np.ndarray) -> np.ndarray:
                return self._prices_at(symbol, times) // tick

            book = self._books[symbol] = BookModel(
                symbol, self._seed, levels=self._levels, mean_qty=self._mean_qty(symbol) * 3,
                best_bid_ticks=best_bid_ticks,
            )
        return book
