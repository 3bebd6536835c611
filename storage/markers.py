"""Publish markers: how one writer learns that another one changed 1m bars.

Resampled bars are derived from the 1m bars of their bucket, and several writers may write
those minutes (the service's shards, ``klinestore import``). A writer whose publish holds 1m
bars announces it in ``state/marker-<writer>.json``: a generation count and, for each of its
last ``KEEP`` such publishes, the stamp it took before it read anything (``start``) and the
1m range it wrote per symbol. The marker is bumped during the journal's roll-forward (:mod:`klinestore.storage.txn`), after
the data files are renamed, so a reader that sees a generation also sees its files, and a
crash in between is finished by the writer's recovery.

A live shard polls the markers before each flush (:class:`MarkerWatch`), reads the announced
ranges back from disk and recomputes the buckets in them it may have computed without them
(see :mod:`klinestore.storage.store`). A reader that fell more than ``KEEP`` generations
behind is told so (``missed``) and refreshes everything it holds in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from klinestore.storage.layout import IMPORT_WRITER, state_dir

#: Publishes a marker remembers; a reader further behind refreshes all it holds.
KEEP = 16
_PREFIX = "marker-"

Ranges = tuple[tuple[str, int, int], ...]  # (symbol, first 1m open time, last 1m open time)


@dataclass(frozen=True, slots=True)
class Change:
    """One publish of another writer: 1m bars of ``ranges``, based on what it read after ``start``."""

    writer: str
    start: int  # a stamp taken before the writer read anything it derived from
    ranges: Ranges


def announcement(start: int, ranges: Mapping[str, tuple[int, int]]) -> dict:
    """The journal entry that :func:`bump` turns into a marker generation."""
    return {"start": start, "ranges": [[symbol, lo, hi] for symbol, (lo, hi) in sorted(ranges.items())]}


def marker_path(data_dir: Path, writer: str) -> Path:
    return state_dir(data_dir) / f"{_PREFIX}{writer}.json"


def bumped(marker: dict | None, entry: dict) -> dict:
    """``marker`` (as read; None if absent or unreadable) with one more generation: ``entry``."""
    current = marker or {"generation": 0, "entries": []}
    generation = current["generation"] + 1
    return {"generation": generation, "entries": [*current["entries"], {**entry, "generation": generation}][-KEEP:]}


@dataclass(frozen=True, slots=True)
class Poll:
    """What :meth:`MarkerWatch.poll` found; :meth:`MarkerWatch.advance` to it once acted on."""

    changes: list[Change]
    missed: bool  # some publishes are no longer listed: refresh everything
    seen: dict[str, int]
    files: dict[str, tuple[int, int, int]]


class MarkerWatch:
    """The other writers' publishes since the last :meth:`advance`."""

    def __init__(self, data_dir: Path, writer: str) -> None:
        self._dir = state_dir(data_dir)
        self._writer = writer
        self._seen: dict[str, int] = {}  # writer -> last generation acted on
        self._files: dict[str, tuple[int, int, int]] = {}  # writer -> (inode, size, mtime) last read

    def prime(self) -> None:
        """Take every marker as seen: called before the in-memory state is read from disk."""
        self.advance(self.poll())

    def poll(self) -> Poll:
        """The publishes since the last :meth:`advance` (a failed flush advances nothing)."""
        changes: list[Change] = []
        missed = False
        seen, files = dict(self._seen), dict(self._files)
        for writer, path in self._markers():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            if files.get(writer) == signature:
                continue
            marker = read_marker(path)
            if marker is None:
                continue  # being replaced right now: the next poll reads it
            last = seen.get(writer, 0)
            new = [e for e in marker["entries"] if e["generation"] > last]
            if marker["generation"] < last or marker["generation"] > last and (not new or new[0]["generation"] > last + 1):
                missed = True  # reset, or more publishes than the marker keeps
            changes.extend(Change(writer, int(e["start"]), tuple((s, int(a), int(b)) for s, a, b in e["ranges"])) for e in new)
            seen[writer] = marker["generation"]
            files[writer] = signature
        return Poll(changes, missed, seen, files)

    def advance(self, poll: Poll) -> None:
        self._seen, self._files = poll.seen, poll.files

    def _markers(self) -> list[tuple[str, Path]]:
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith(_PREFIX) and name.endswith(".json"):
                writer = name[len(_PREFIX):-len(".json")]
                if writer != self._writer and (writer[0] == self._writer[0] or writer == IMPORT_WRITER):
                    out.append((writer, self._dir / name))  # a writer of this dataset, or the importer
        return out


def read_marker(path: Path) -> dict | None:
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("generation"), int) or not isinstance(marker.get("entries"), list):
        return None
    return marker
