"""Fetches the REST depth snapshots that order books ask for (the I/O half of ``klinestore.ingest.orderbook``).

A book asks once its stream has delivered an event (so the snapshot is newer than the first
buffered event, as Binance's algorithm wants). Snapshots are weighty (20 at 1000 levels), so
at most ``WORKERS`` are in flight, each goes through the REST client's weight budget ahead of
periodic checks (``Priority.SYNC``: a book out of sync is blind), the book keeps only its
newest few events until the request actually goes (``OrderBook.fetching``), and a
symbol whose sync failed waits with its own backoff before the next try: a depth stream
with a persistent problem cannot eat the weight budget.

A synced book whose price walked toward its snapshot's edge wants a refresh: routine
upkeep, so at most one per ``refresh_every`` seconds per book, behind every other request
(``Priority.CHECK``), and the book keeps serving the levels it knows until the request goes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from klinestore.ingest.backoff import Backoff, BackoffPolicy
from klinestore.ingest.budget import Priority
from klinestore.ingest.errors import IngestError
from klinestore.ingest.rest import RestClient
from klinestore.ingest.state import MarketState
from klinestore.ingest.throttle import LogThrottle

log = logging.getLogger(__name__)

WORKERS = 2
RETRY = BackoffPolicy(base=0.5, cap=30.0, jitter=0.2, max_retries=1_000_000)


class DepthSync:
    """Symbols whose books want a snapshot, and the workers that fetch them."""

    def __init__(self, state: MarketState, rest: RestClient, limit: int, *, refresh_every: float = 60.0) -> None:
        self.state = state
        self.rest = rest
        self.limit = limit
        self.refresh_every = refresh_every
        self.fetched = 0
        self.failed = 0
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._backoff: dict[str, Backoff] = {}
        self._not_before: dict[str, float] = {}
        self._refresh_after: dict[str, float] = {}
        self._log = LogThrottle(log)
        self._tasks: list[asyncio.Task[None]] = []

    def want(self, symbol: str) -> None:
        """A book needs a snapshot or wants a refresh (called from the hot path: cheap, idempotent)."""
        if symbol in self._queued:
            return
        now = time.monotonic()
        if now < self._not_before.get(symbol, 0.0):
            return
        book = self.state.books.get(symbol)
        if book is not None and book.synced and now < self._refresh_after.get(symbol, 0.0):
            return  # a refresh: at most one per refresh_every after the book's last snapshot
        self._queued.add(symbol)
        self._queue.put_nowait(symbol)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"depthsync-{i}") for i in range(WORKERS)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            symbol = await self._queue.get()
            self._queued.discard(symbol)
            book = self.state.books.get(symbol)
            if book is None:
                continue
            if book.needs_snapshot:
                priority, on_turn = Priority.SYNC, book.fetching
            elif book.synced and book.refresh_wanted:
                priority, on_turn = Priority.CHECK, book.begin_refresh
            else:
                continue
            try:
                snapshot = await self.rest.depth(symbol, self.limit, priority=priority, on_turn=on_turn)
                ok = book.on_snapshot(snapshot)
            except IngestError as exc:
                ok = False
                book.fetching(False)
                self._log.warning(f"depth:{symbol}", "%s depth snapshot failed: %s", symbol, exc)
            if ok:
                self.fetched += 1
                self._refresh_after[symbol] = time.monotonic() + self.refresh_every
                self._backoff.pop(symbol, None)
                self._not_before.pop(symbol, None)
                continue
            self.failed += 1
            backoff = self._backoff.setdefault(symbol, Backoff(RETRY))
            delay = backoff.next_delay() or RETRY.cap
            self._not_before[symbol] = time.monotonic() + delay
            asyncio.get_running_loop().call_later(delay, self.want, symbol)
