"""Order-book checks (seed v6.4 §5.2) and the record of every resync.

**The snapshot check** (both modes, every ``reconciliation.depth_interval``): a small REST
snapshot (``CHECK_LIMIT`` levels, weight 2) gives the exchange's ``lastUpdateId`` L. The seed
resyncs when ``L - book.last_update_id > 100``; taken literally that fires on every healthy
busy book, because the diff stream is pushed every 100-500 ms and a busy symbol moves its
update id by hundreds in that time (the simulator: ~120 per push). So a book that is behind
by more than ``depth_gap_threshold`` gets ``CATCH_UP_PUSHES`` push periods (at least
``CATCH_UP_MIN_S``) to apply an event reaching L. A book that moves but has not reached L is
*lagging* (counted: the service is reading late, and resyncing would only add a 1000-level
snapshot to its load; its chain of update ids is intact, so its levels are right as of its
id). Only a book that does not move at all (a stalled or lost depth stream) is resynced:
``OrderBook.request_snapshot`` (the book forgets its levels and syncs again by Binance's
algorithm from a full snapshot, so no partial snapshot ever becomes the book).

**Every resync is recorded**, whoever caused it: the book's own chain breaks (an event whose
``pu`` is not the book's last id: ``depth_gap``) and the check's. Each becomes a
``reconciliations`` row (``interval`` "depth", ``open_time`` the exchange time of the event or
snapshot, ``field``/``ws_value``/``ref_value``: "pu" with the book's last id and the event's
``pu``, or "last_update_id" with the book's id and the snapshot's, ``ref_source``
"depth_stream" or "rest", ``action`` "resynced") and one DataQual resync event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ingest.errors import IngestError
from ingest.orderbook import OrderBook, Resync
from ingest.rest import RestClient
from klinestore.jobs.dataqual import DataQualModel
from storage.tables import QualityDB

log = logging.getLogger(__name__)

#: Levels of the check snapshot: only ``lastUpdateId`` is used; 5 levels weigh 2 (1000 weigh 20).
CHECK_LIMIT = 5
#: Push periods a lagging book gets to reach the snapshot's id before it is resynced.
CATCH_UP_PUSHES = 4
CATCH_UP_MIN_S = 0.5
#: Snapshot checks in flight at once (each waits for its book to catch up).
CONCURRENCY = 8

ReconRow = tuple[int, str, str, int, str, float | None, float | None, str, str]


@dataclass(frozen=True, slots=True)
class ResyncRecord:
    """One resync to report: its row and the DataQual event."""

    symbol: str
    ts_ms: int
    event_ms: int
    field: str
    book_id: float | None
    ref_id: float | None
    ref_source: str

    def row(self) -> ReconRow:
        return (self.ts_ms, self.symbol, "depth", self.event_ms, self.field, self.book_id, self.ref_id,
                self.ref_source, "resynced")


def behind(book_id: int, snapshot_id: int, threshold: int) -> bool:
    """The seed's test: the snapshot is more than ``threshold`` update ids ahead of the book."""
    return snapshot_id - book_id > threshold


def new_resyncs(book: OrderBook, seen: int, ts_ms: int) -> list[ResyncRecord]:
    """Resyncs of ``book`` after the ``seen``-th, with their details where the book still has them.

    Requested resyncs are skipped (the check that requested one records it with the
    snapshot's id). More resyncs than the book remembers come out without ids.
    """
    count = book.resyncs - seen
    if count <= 0:
        return []
    known: dict[int, Resync] = {r.ordinal: r for r in book.recent_resyncs if r.ordinal > seen}
    out: list[ResyncRecord] = []
    for ordinal in range(seen + 1, book.resyncs + 1):
        r = known.get(ordinal)
        if r is None:
            out.append(ResyncRecord(book.symbol, ts_ms, ts_ms, "pu", None, None, "depth_stream"))
        elif r.cause != "requested":
            out.append(ResyncRecord(book.symbol, ts_ms, r.event_ms, "pu", float(r.book_id), float(r.event_pu),
                                    "depth_stream"))
    return out


class DepthChecker:
    """Snapshot checks and the resync record, for every book of the feed."""

    def __init__(
        self,
        books: Callable[[], Mapping[str, OrderBook]],
        rest: RestClient,
        db: QualityDB,
        model: DataQualModel,
        now_ms: Callable[[], int | None],
        *,
        threshold: int,
        push_s: Callable[[], float],
    ) -> None:
        self.books = books
        self.rest = rest
        self.db = db
        self.model = model
        self.now_ms = now_ms
        self.threshold = threshold
        self.push_s = push_s  # real seconds between diff-depth pushes (exchange period over clock rate)
        self.checks = 0
        self.caught_up = 0  # books found behind that reached the snapshot's id in time
        self.lagging = 0  # books found behind that moved but did not reach it (read late, not broken)
        self.resyncs_requested = 0
        self.resyncs_recorded = 0
        self.failures = 0
        self._seen: dict[str, int] = {}

    async def observe(self) -> int:
        """Record resyncs that happened since the last look (cheap: run it at every heartbeat)."""
        now = self.now_ms()
        if now is None:
            return 0
        records: list[ResyncRecord] = []
        for symbol, book in self.books().items():
            records.extend(new_resyncs(book, self._seen.get(symbol, 0), now))
            self._seen[symbol] = book.resyncs
        await self._record(records)
        return len(records)

    async def check(self) -> None:
        """One snapshot check of every synced book (then the resync record)."""
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(symbol: str, book: OrderBook) -> ResyncRecord | None:
            async with gate:
                return await self._check_book(symbol, book)

        books = [(s, b) for s, b in self.books().items() if b.synced]
        results = await asyncio.gather(*(one(s, b) for s, b in books), return_exceptions=True)
        records: list[ResyncRecord] = []
        for (symbol, _), result in zip(books, results):
            if isinstance(result, IngestError):
                self.failures += 1
                log.warning("%s depth check failed: %s", symbol, result)
            elif isinstance(result, BaseException):
                raise result
            elif result is not None:
                records.append(result)
        await self._record(records)
        await self.observe()

    async def _check_book(self, symbol: str, book: OrderBook) -> ResyncRecord | None:
        snapshot = await self.rest.depth(symbol, CHECK_LIMIT)
        self.checks += 1
        target = snapshot.lastUpdateId
        if not behind(book.last_update_id, target, self.threshold):
            return None
        book_id = book.last_update_id
        deadline = time.monotonic() + max(CATCH_UP_MIN_S, CATCH_UP_PUSHES * self.push_s())
        while book.synced and book.last_update_id < target and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not book.synced:  # the book broke on its own meanwhile: observe() records that one
            return None
        if book.last_update_id >= target:
            self.caught_up += 1
            return None
        if book.last_update_id > book_id:
            self.lagging += 1
            return None
        book.request_snapshot()  # recorded here, with the snapshot's id (``new_resyncs`` skips requested ones)
        self.resyncs_requested += 1
        log.warning("%s order book %d update ids behind the exchange and not moving: resync", symbol,
                    target - book_id)
        now = self.now_ms() or 0
        return ResyncRecord(symbol, now, snapshot.E or now, "last_update_id", float(book_id), float(target), "rest")

    async def _record(self, records: list[ResyncRecord]) -> None:
        if not records:
            return
        for r in records:
            self.model.record_resync(r.symbol, r.ts_ms)
            if r.ref_source == "depth_stream":
                log.warning("%s order book resynced: %s", r.symbol,
                            f"event pu {r.ref_id:.0f} after update {r.book_id:.0f}" if r.book_id is not None
                            else "chain broken")
        self.resyncs_recorded += len(records)
        await asyncio.to_thread(self.db.insert_reconciliations, [r.row() for r in records])

    def status(self) -> dict[str, int]:
        return {"checks": self.checks, "caught_up": self.caught_up, "lagging": self.lagging,
                "resyncs_requested": self.resyncs_requested,
                "resyncs_recorded": self.resyncs_recorded, "failures": self.failures}
