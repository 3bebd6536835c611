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

from klinestore.ingest.budget import Priority
from klinestore.ingest.errors import IngestError
from klinestore.ingest.orderbook import OrderBook, Resync
from klinestore.ingest.protocol.rest import DepthSnapshot
from klinestore.ingest.rest import RestClient
from klinestore.jobs.dataqual import DataQualModel
from klinestore.storage.tables import QualityDB, ReconciliationRow

log = logging.getLogger(__name__)

#: Levels of the check snapshot: only ``lastUpdateId`` is used; 5 levels weigh 2 (1000 weigh 20).
CHECK_LIMIT = 5
#: Push periods a lagging book gets to reach the snapshot's id before it is resynced.
CATCH_UP_PUSHES = 4
CATCH_UP_MIN_S = 0.5
#: Snapshot requests of one check in flight at once (the REST client allows 4 of any kind).
CONCURRENCY = 8


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

    def row(self) -> ReconciliationRow:
        return (self.ts_ms, self.symbol, "depth", self.event_ms, self.field, self.book_id, self.ref_id,
                self.ref_source, "resynced")


def behind(book_id: int, snapshot_id: int, threshold: int) -> bool:
    """The seed's test: the snapshot is more than ``threshold`` update ids ahead of the book."""
    return snapshot_id - book_id > threshold


def catch_up_verdict(book_id: int, book_id_now: int, snapshot_id: int, *, synced: bool) -> str:
    """A book that was behind a snapshot, after its catch-up wait.

    ``caught_up`` (it reached the snapshot's id), ``lagging`` (it moved, not that far: read
    late, not broken), ``stalled`` (it did not move: resync it), ``broken`` (it resynced itself).
    """
    if not synced:
        return "broken"
    if book_id_now >= snapshot_id:
        return "caught_up"
    return "lagging" if book_id_now > book_id else "stalled"


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
        """One snapshot check of every synced book, one catch-up wait for all, then the resync record."""
        gate = asyncio.Semaphore(CONCURRENCY)

        async def snap(symbol: str, book: OrderBook) -> tuple[DepthSnapshot, int]:
            async with gate:
                snapshot = await self.rest.depth(symbol, CHECK_LIMIT, priority=Priority.CHECK)
                return snapshot, book.last_update_id

        books = [(s, b) for s, b in self.books().items() if b.synced]
        results = await asyncio.gather(*(snap(s, b) for s, b in books), return_exceptions=True)
        behind_ones: list[tuple[str, OrderBook, DepthSnapshot, int]] = []
        for (symbol, book), result in zip(books, results):
            if isinstance(result, IngestError):
                self.failures += 1
                log.warning("%s depth check failed: %s", symbol, result)
            elif isinstance(result, BaseException):
                raise result
            else:
                self.checks += 1
                snapshot, book_id = result
                if behind(book_id, snapshot.lastUpdateId, self.threshold):
                    behind_ones.append((symbol, book, snapshot, book_id))
        if behind_ones:
            push = self.push_s()
            deadline = time.monotonic() + max(CATCH_UP_MIN_S, CATCH_UP_PUSHES * push)
            while time.monotonic() < deadline and any(
                    b.synced and b.last_update_id < snap.lastUpdateId for _, b, snap, _ in behind_ones):
                await asyncio.sleep(max(0.01, push / 4))
        records = [r for r in (self._judge(*item) for item in behind_ones) if r is not None]
        await self._record(records)
        await self.observe()

    def _judge(self, symbol: str, book: OrderBook, snapshot: DepthSnapshot, book_id: int) -> ResyncRecord | None:
        """After the catch-up wait: fine, lagging, or stalled (resync it)."""
        verdict = catch_up_verdict(book_id, book.last_update_id, snapshot.lastUpdateId, synced=book.synced)
        if verdict == "caught_up":
            self.caught_up += 1
        elif verdict == "lagging":
            self.lagging += 1
        if verdict != "stalled":  # "broken": the book broke on its own meanwhile, observe() records it
            return None
        book.request_snapshot()  # recorded here, with the snapshot's id (``new_resyncs`` skips requested ones)
        self.resyncs_requested += 1
        target = snapshot.lastUpdateId
        log.warning("%s order book %d update ids behind the exchange and not moving: resync", symbol, target - book_id)
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
