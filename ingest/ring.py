"""A bounded, columnar ring of records kept in key order (klines by open time, trades by id).

One numpy structured array, preallocated small and doubled on demand up to ``capacity``;
at capacity the oldest record is overwritten. Appends are the hot path (one row
assignment); merges of older records (back-fills, late arrivals) rebuild the array, which
is rare and bounded by the capacity.
"""

from __future__ import annotations

import numpy as np

INITIAL_ROWS = 64


class Ring:
    """Records oldest (smallest key) first; ``capacity`` bounds both memory and history."""

    __slots__ = ("capacity", "key", "_dtype", "_rows", "_start", "_len")

    def __init__(self, dtype: np.dtype, capacity: int, *, key: str) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.key = key
        self._dtype = dtype
        self._rows = np.zeros(min(capacity, INITIAL_ROWS), dtype=dtype)
        self._start = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def nbytes(self) -> int:
        return self._rows.nbytes

    def append(self, row: tuple[object, ...]) -> None:
        """Add the newest record; at capacity the oldest is overwritten."""
        rows = self._rows
        size = len(rows)
        if self._len < size:
            rows[(self._start + self._len) % size] = row
            self._len += 1
        elif size < self.capacity:  # still growing, so never wrapped: _start is 0
            grown = np.zeros(min(self.capacity, size * 2), dtype=self._dtype)
            grown[:size] = rows
            grown[size] = row
            self._rows = grown
            self._len += 1
        else:
            rows[self._start] = row
            self._start = (self._start + 1) % size

    def tail(self, n: int | None = None) -> np.ndarray:
        """The newest ``n`` records (all when None), oldest first, as a copy."""
        n = self._len if n is None else max(0, min(n, self._len))
        size = len(self._rows)
        first = (self._start + self._len - n) % size
        if first + n <= size:
            return self._rows[first : first + n].copy()
        return np.concatenate((self._rows[first:], self._rows[: first + n - size]))

    def key_at(self, index: int) -> int:
        """Key of the record at logical ``index`` (negative counts from the newest)."""
        if index < 0:
            index += self._len
        return int(self._rows[self.key][(self._start + index) % len(self._rows)])

    def index_of(self, key: int) -> int:
        """Logical index of the first record with a key >= ``key`` (binary search)."""
        lo, hi = 0, self._len
        keys, start, size = self._rows[self.key], self._start, len(self._rows)
        while lo < hi:
            mid = (lo + hi) // 2
            if keys[(start + mid) % size] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def contains(self, key: int) -> bool:
        i = self.index_of(key)
        return i < self._len and self.key_at(i) == key

    def merge(self, rows: np.ndarray, *, replace: bool = False) -> np.ndarray:
        """Merge ``rows`` (unique keys) in key order; return the mask of ``rows`` that were taken.

        Records already present win unless ``replace``. Only the newest ``capacity`` are kept.
        """
        existing = self.tail()
        present = np.isin(rows[self.key], existing[self.key])
        if replace:
            existing = existing[~np.isin(existing[self.key], rows[self.key])]
            taken = np.ones(len(rows), dtype=bool)
        else:
            taken = ~present
        merged = np.concatenate((existing, rows[taken]))
        self.replace_all(merged[np.argsort(merged[self.key], kind="stable")])
        return taken

    def replace_all(self, rows: np.ndarray) -> None:
        """Replace the contents with ``rows`` (sorted by key; only the newest ``capacity`` kept)."""
        rows = rows[len(rows) - min(len(rows), self.capacity) :]
        size = max(min(self.capacity, INITIAL_ROWS), len(rows))
        self._rows = np.zeros(size, dtype=self._dtype)
        self._rows[: len(rows)] = rows
        self._start, self._len = 0, len(rows)
