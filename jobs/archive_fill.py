"""WebSocket-only gap filling from the exchange's archive host (``jobs.archive_fill``; off by default).

In WebSocket-only mode REST klines are never called, so a hole stays open until the
exchange's daily archive of its day is imported. This job does that by itself: every
``jobs.archive_fill_interval`` (a day by default; first run a minute after start) it takes
the symbols with open gap records, the days those gaps cover that are over (exchange time),
at most ``MAX_DAYS`` back, and fetches their 1m archives from ``jobs.archive_url``
(checksum-verified, ``klinestore.ingest.archives``), then imports them as the importer does
(1m bars resampled into the stored intervals). The gap check closes the records once the
bars are stored. 0 REST weight: the archive host is not the API. A day the host does not
have yet (404) is asked again next run; an imported one is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from klinestore.ingest.archives import download
from klinestore.ingest.protocol.archive import ArchiveRef
from klinestore.jobs.gaps import GapBook
from klinestore.storage import import_archives
from klinestore.storage.config import StorageConfig

log = logging.getLogger(__name__)

MAX_DAYS = 7
FIRST_RUN_AFTER_S = 60.0


def days_to_fetch(runs: list[tuple[str, str, int, int]], today: date, done: set[tuple[str, date]]) -> list[tuple[str, date]]:
    """(symbol, day) of every day over (before ``today``) that an open run touches, newest ``MAX_DAYS`` only."""
    wanted: set[tuple[str, date]] = set()
    oldest = today - timedelta(days=MAX_DAYS)
    for symbol, _, start, end in runs:
        day = max(_day(start), oldest)
        while day <= min(_day(end), today - timedelta(days=1)):
            if (symbol, day) not in done:
                wanted.add((symbol, day))
            day += timedelta(days=1)
    return sorted(wanted)


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date()


class ArchiveFill:
    """The job: open gaps -> daily 1m archives -> import (see the module docstring)."""

    def __init__(self, book: GapBook, data_dir: Path, storage: StorageConfig, url: str,
                 now_ms: Callable[[], int | None]) -> None:
        self.book, self.data_dir, self.storage, self.url, self.now_ms = book, data_dir, storage, url, now_ms
        self.done: set[tuple[str, date]] = set()
        self.imported_files = 0
        self.imported_bars = 0
        self.refused = 0
        self.last_error = ""

    async def run(self) -> None:
        now = self.now_ms()
        if now is None:
            return
        wanted = days_to_fetch(self.book.open_runs(), _day(now), self.done)
        if not wanted:
            return
        refs = [ArchiveRef("klines", symbol, "1m", day) for symbol, day in wanted]
        fetched = await download(refs, self.url, self.data_dir / "downloads")
        usable = [f for f in fetched if f.outcome in ("downloaded", "present")]
        for f in fetched:
            if f.outcome == "corrupt":
                self.refused += 1
                self.last_error = f.detail
                log.warning("archive_fill: %s; not imported, asked again next run", f.detail)
        if usable:
            report = await asyncio.to_thread(import_archives, [f.path for f in usable], self.data_dir, self.storage)
            self.done.update((f.ref.symbol, f.ref.day) for f in usable)
            self.imported_files += len(usable)
            self.imported_bars += report.written
            log.info("archive_fill: imported %d daily archives (%d bars written) for open gaps", len(usable),
                     report.written)

    def status(self) -> dict[str, Any]:
        return {"imported_files": self.imported_files, "imported_bars": self.imported_bars, "refused": self.refused,
                "last_error": self.last_error}
