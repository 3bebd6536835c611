"""The newest series rows made durable but perhaps not yet in Parquet, per (series, symbol).

A reader of the store (the gateway) misses rows that sit in a WAL until the next flush; this
keeps them in memory so it can merge them in, as it merges the klines rings. Rows are
numbered as they arrive; the service takes a :meth:`RecentRows.checkpoint` before a flush
and, once the flush has succeeded, :meth:`RecentRows.trim` drops every row numbered up to
it (they are in Parquet now). Rows added while the flush ran stay, so no row is ever in
neither place; a reader deduplicates the overlap by key. Each (series, symbol) is bounded
(``max_rows``): while flushes fail the oldest go first, counted in ``dropped``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

#: Rows kept per (series, symbol): a busy symbol's aggTrades of several flush intervals (about 100 bytes each).
MAX_ROWS = 50_000


class RecentRows:
    """Rows by (series, symbol), numbered as they arrive (see the module docstring)."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.max_rows = max_rows
        self._rows: dict[tuple[str, str], deque[tuple[int, Any]]] = {}
        self._seq = 0
        self.dropped = 0  # rows pushed out by the bound before a flush took them

    def extend(self, kind: str, rows: Iterable[Any]) -> None:
        """Rows of series ``kind`` (each with a ``symbol`` attribute), just made durable."""
        for row in rows:
            rows_of = self._rows.get((kind, row.symbol))
            if rows_of is None:
                rows_of = self._rows[(kind, row.symbol)] = deque()
            self._seq += 1
            rows_of.append((self._seq, row))
            if len(rows_of) > self.max_rows:
                rows_of.popleft()
                self.dropped += 1

    def rows(self, kind: str, symbol: str) -> list[Any]:
        """The rows kept for ``(kind, symbol)``, in arrival order."""
        return [row for _, row in self._rows.get((kind, symbol), ())]

    def checkpoint(self) -> int:
        return self._seq

    def trim(self, checkpoint: int) -> None:
        """Forget the rows added up to ``checkpoint``: a flush begun after it published them."""
        for rows_of in self._rows.values():
            while rows_of and rows_of[0][0] <= checkpoint:
                rows_of.popleft()

    def __len__(self) -> int:
        return sum(len(r) for r in self._rows.values())
