"""WebSocket-only repair: 1m bars the kline stream missed, rebuilt exactly from the stored aggTrades.

When a symbol's kline stream goes silent while its aggTrade stream goes on (a stalled stream,
a lost subscription), the trades of the missing minutes were received and kept
(``storage.persist_aggtrades``). A gap of 1m bars is rebuilt from them only when the trades
prove complete: the last trade before the gap, the first trade after it and every aggregate
id in between are stored (ids are consecutive, so no id gap means no trade missed). The bars
come from :func:`klinestore.storage.bars_from_trades` (the exchange's rule: exact on real
data), source ``trades``, and go through the dispatcher like a REST back-fill (WAL, ring,
callbacks); ``on_gap_filled`` then closes the gap record. A gap that cannot be proved yet
(no trade after it so far) is tried again next run, for ``MAX_AGE_MS`` of exchange time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

import polars as pl

from klinestore.core.intervals import MINUTE_MS
from klinestore.ingest.feed import Feed
from klinestore.storage import TradeStore, bars_from_trades, to_bars

log = logging.getLogger(__name__)

#: How far around a gap trades are read to find the ones bounding it.
MARGIN_MS = 10 * MINUTE_MS
#: A gap not provable this long after its end is left to the gap record (and an import).
MAX_AGE_MS = 60 * MINUTE_MS
#: Gaps waiting at once; the oldest is dropped (and counted) beyond it.
MAX_WAITING = 10_000


class TradeRepair:
    """Queues the feed's 1m gaps and repairs them from the stored trades (see the module docstring)."""

    def __init__(self, feed: Feed, trades: TradeStore) -> None:
        self.feed, self.trades = feed, trades
        self._waiting: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self.repaired_bars = 0
        self.repaired_gaps = 0
        self.unproved = 0  # gaps given up: the trades never proved complete
        self.dropped = 0

    def on_gap(self, symbol: str, interval: str, start: int, end: int, reason: str) -> None:
        """``Feed.on_gap``: remember a 1m gap (``start``/``end``: first and last missing open times)."""
        if interval != "1m":
            return
        self._waiting[(symbol, start, end)] = None
        if len(self._waiting) > MAX_WAITING:
            self._waiting.popitem(last=False)
            self.dropped += 1

    async def run(self) -> None:
        now = self.feed.clock.now_ms()
        for key in list(self._waiting):
            symbol, start, end = key
            bars = await asyncio.to_thread(self.rebuild, symbol, start, end)  # reads Parquet: off the loop
            if bars is None:
                if now is not None and now - end > MAX_AGE_MS:
                    self._waiting.pop(key, None)
                    self.unproved += 1
                continue
            self._waiting.pop(key, None)
            series = self.feed.state.klines.get((symbol, "1m"))
            if series is None:
                continue
            committed = self.feed.dispatcher.accept(series, to_bars(bars))
            self.repaired_bars += len(committed)
            self.repaired_gaps += 1
            log.info("repaired %s 1m %d..%d from aggTrades: %d bars", symbol, start, end, len(committed))
            self.feed.gap_filled.emit(symbol, "1m", start, end, len(committed))

    def rebuild(self, symbol: str, start: int, end: int) -> pl.DataFrame | None:
        """The 1m bars with open times in ``[start, end]`` from the trades, or None if they do not prove complete."""
        stop = end + MINUTE_MS
        trades = self.trades.read(symbol, start - MARGIN_MS, stop + MARGIN_MS)
        times = trades.get_column("transact_time")
        before, after = trades.filter(times < start), trades.filter(times >= stop)
        if before.is_empty() or after.is_empty():
            return None
        first, last = int(before.get_column("agg_trade_id").max()), int(after.get_column("agg_trade_id").min())
        span = trades.filter(pl.col("agg_trade_id").is_between(first, last))
        if span.height != last - first + 1:
            return None  # an id is missing: a trade was not received
        bars = bars_from_trades(span, symbol, source="trades")
        bars = bars.filter(pl.col("open_time").is_between(start, end))
        return bars if bars.height == (end - start) // MINUTE_MS + 1 else None

    def status(self) -> dict[str, int]:
        return {"waiting": len(self._waiting), "repaired_gaps": self.repaired_gaps, "repaired_bars": self.repaired_bars,
                "unproved": self.unproved, "dropped": self.dropped}
