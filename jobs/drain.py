"""Draining the feed's in-memory logs into the DuckDB tables, and publishing them.

* ``connection_events``: every connection transition since the last drain
  (``Feed.events.since(seq)``). The event log is bounded (10 000); transitions that fell out
  of it between two drains are counted (``lost_events``) and logged.
* ``api_calls``: REST calls and weight per exchange minute and endpoint
  (``Feed.ledger.rows``). A minute's row grows while its requests finish, so what was written
  is remembered for ``SETTLE_MINUTES`` and only the difference is added (``add_api_calls``
  adds to what the minute has, which also keeps the counts of earlier runs of the service).
  The service's very first request (server time) precedes the exchange clock and has no
  minute (0): it is in status.json's ledger totals, not in the table.

Then ``QualityDB.publish()`` rewrites the changed Parquet copies atomically, in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time

from klinestore.core.intervals import MINUTE_MS
from klinestore.ingest.eventlog import EventLog
from klinestore.ingest.ledger import ApiLedger
from klinestore.storage.tables import QualityDB

log = logging.getLogger(__name__)

#: Minutes after which a minute's API-call row is final (requests time out long before).
SETTLE_MINUTES = 10


class TableDrain:
    """Moves connection events and API calls into the tables; publishes the tables."""

    def __init__(self, db: QualityDB, events: EventLog, ledger: ApiLedger) -> None:
        self.db = db
        self.events = events
        self.ledger = ledger
        self.lost_events = 0
        self.published_files = 0
        self.last_publish_ms: int | None = None  # wall clock
        self._seq = 0
        self._since = 0  # minutes before this are final and written
        self._written: dict[tuple[int, str], tuple[int, int]] = {}

    def collect(self) -> tuple[list[tuple[int, str, str, str, str]], list[tuple[int, str, int, int]]]:
        """New connection-event rows and API-call differences since the last call (on the event loop)."""
        fresh = self.events.since(self._seq)
        if fresh and fresh[0].seq > self._seq + 1:
            lost = fresh[0].seq - self._seq - 1
            self.lost_events += lost
            log.warning("%d connection events fell out of the event log before they reached the table", lost)
        if fresh:
            self._seq = fresh[-1].seq
        events = [(e.ts_ms, e.conn_id, e.from_state, e.to_state, e.reason) for e in fresh]
        rows = self.ledger.rows(self._since)
        calls = []
        for minute, endpoint, n, weight in rows:
            if minute <= 0:
                continue
            done = self._written.get((minute, endpoint), (0, 0))
            if (n, weight) != done:
                calls.append((minute, endpoint, n - done[0], weight - done[1]))
                self._written[(minute, endpoint)] = (n, weight)
        newest = max((m for m, *_ in rows), default=self._since)
        self._since = max(self._since, newest - SETTLE_MINUTES * MINUTE_MS)
        for key in [k for k in self._written if k[0] < self._since]:
            del self._written[key]
        return events, calls

    async def drain(self) -> int:
        """The publish job: drain the logs, then publish every table that changed."""
        events, calls = self.collect()

        def write() -> int:
            self.db.insert_connection_events(events)
            self.db.add_api_calls(calls)
            return len(self.db.publish())

        self.published_files += await asyncio.to_thread(write)
        self.last_publish_ms = int(time.time() * 1000)
        return len(events) + len(calls)

    def status(self) -> dict[str, object]:
        return {"published_files": self.published_files, "lost_events": self.lost_events,
                "last_publish_ms": self.last_publish_ms}
