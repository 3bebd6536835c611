"""Where closed bars leave ingest: one interface, implemented by storage's ``BarStore``.

``append`` is called on the event loop for every closed bar *before* the bar reaches a ring
buffer or a callback, and must make the bars durable (the WAL) before it returns: a bar that
was acknowledged anywhere survives ``kill -9``. It must be fast (a buffered write and a
batched fsync, not a Parquet write). If it raises, the dispatcher holds the bars back and
retries them with the next append.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from klinestore.core.schema import Bar


@runtime_checkable
class BarSink(Protocol):
    def append(self, bars: Sequence[Bar]) -> None: ...


class MemorySink:
    """Keeps the newest ``maxlen`` bars in memory (tests, and runs without storage)."""

    def __init__(self, maxlen: int = 1_000_000) -> None:
        self.bars: deque[Bar] = deque(maxlen=maxlen)
        self.appends = 0

    def append(self, bars: Sequence[Bar]) -> None:
        self.bars.extend(bars)
        self.appends += 1

    def keys(self) -> list[tuple[str, str, int]]:
        return [b.key for b in self.bars]

    def of(self, symbol: str, interval: str) -> list[Bar]:
        """The bars of one series, in the order they were appended."""
        return [b for b in self.bars if b.symbol == symbol and b.interval == interval]
