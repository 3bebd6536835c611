"""Atomic publishes: many new files appear, and old ones go, all or nothing, even across a crash.

A :class:`Publish` collects files written under their ``.tmp`` names (already fsynced),
files to delete at once (WAL segments a flush consumed) and files that become obsolete
(compaction inputs). ``commit`` then

1. writes a journal ``state/txn-<writer>-<stamp>.json`` (tmp, fsync, rename, fsync dir): the
   point of no return;
2. renames every tmp to its final name and fsyncs the directories;
3. deletes what is to go; obsolete files stay readable for ``grace`` seconds (queries that
   already listed them keep working; readers dedup the identical rows meanwhile), the journal
   keeping the list until :func:`collect` deletes them;
4. removes the journal.

:func:`recover` runs when a writer opens: every journal of that writer is rolled forward
(steps 2-4 are idempotent), and any ``.tmp`` of that writer without a journal is deleted,
which rolls back a publish that crashed before step 1. Journals are per writer, so
recovering shard 3 never touches the importer's work in progress.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from klinestore.storage.errors import StorageError
from klinestore.storage.fsguard import create_new
from klinestore.storage.layout import PARTITION_GLOBS, Stamper, state_dir, tmp_path
from klinestore.storage.markers import bumped, marker_path, read_marker


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: object, *, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` as JSON, all or nothing; durable once its directory is
    fsynced (here, unless the caller fsyncs that directory next anyway)."""
    text = json.dumps(data, separators=(",", ":"))  # one C-encoded string: json.dump writes piece by piece
    tmp = tmp_path(path)
    with create_new(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


@dataclass(slots=True)
class Publish:
    """One atomic change of the files under ``data_dir`` by one writer."""

    data_dir: Path
    writer: str
    stamper: Stamper
    grace: float = 0.0
    created: list[Path] = field(default_factory=list)
    deleted: list[Path] = field(default_factory=list)
    obsolete: list[Path] = field(default_factory=list)
    announce: dict | None = None  # :func:`klinestore.storage.markers.announcement` of the 1m bars written

    def new_file(self, final: Path) -> Path:
        """Register ``final`` and return the tmp path the caller writes (and fsyncs) first."""
        final.parent.mkdir(parents=True, exist_ok=True)
        self.created.append(final)
        return tmp_path(final)

    def delete(self, paths: Iterable[Path]) -> None:
        self.deleted.extend(paths)

    def retire(self, paths: Iterable[Path]) -> None:
        """Files whose rows live on in a created file: deleted after the grace period."""
        self.obsolete.extend(paths)

    def abort(self) -> None:
        """Drop the tmp files written so far; nothing was published."""
        for final in self.created:
            tmp_path(final).unlink(missing_ok=True)
        self.created.clear()

    def commit(self) -> None:
        if not (self.created or self.deleted or self.obsolete):
            return
        journal = state_dir(self.data_dir) / f"txn-{self.writer}-{self.stamper.next():016x}.json"
        journal.parent.mkdir(parents=True, exist_ok=True)
        rel = self._relative
        entry = {
            "create": [rel(p) for p in self.created],
            "delete": [rel(p) for p in self.deleted],
            "obsolete": [rel(p) for p in self.obsolete],
            "delete_after": time.time() + self.grace,
            "announce": self.announce,
        }
        try:
            write_json_atomic(journal, entry)
            _roll_forward(self.data_dir, journal, entry)
        except OSError as exc:
            raise StorageError(f"cannot publish files of writer {self.writer}: {exc}") from exc

    def _relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(Path(self.data_dir).resolve()))


def _roll_forward(data_dir: Path, journal: Path, entry: dict) -> None:
    dirs: set[Path] = set()
    for rel in entry["create"]:
        final = data_dir / rel
        tmp = tmp_path(final)
        if tmp.exists():
            os.replace(tmp, final)
        elif not final.exists():
            raise StorageError(f"journal {journal.name}: neither {tmp} nor {final} exists")
        dirs.add(final.parent)
    for rel in entry["delete"]:
        (data_dir / rel).unlink(missing_ok=True)
        dirs.add((data_dir / rel).parent)
    for directory in dirs:
        if directory.exists():
            fsync_dir(directory)
    if entry.get("announce"):  # the files are visible: now the other writers may learn of them
        path = marker_path(data_dir, journal.name.split("-")[1])
        write_json_atomic(path, bumped(read_marker(path), entry["announce"]), sync_dir=False)  # state/ is synced below
    if entry["obsolete"] and entry["delete_after"] > time.time():
        if entry["create"] or entry["delete"] or entry.get("announce"):
            write_json_atomic(journal, {**entry, "create": [], "delete": [], "announce": None})
        return
    retired: set[Path] = set()  # the created files' directories are durable already
    for rel in entry["obsolete"]:
        (data_dir / rel).unlink(missing_ok=True)
        retired.add((data_dir / rel).parent)
    for directory in retired:
        if directory.exists():
            fsync_dir(directory)
    journal.unlink(missing_ok=True)
    fsync_dir(journal.parent)


def _journals(data_dir: Path, writer: str) -> list[Path]:
    directory = state_dir(data_dir)
    return sorted(directory.glob(f"txn-{writer}-*.json")) if directory.is_dir() else []


def collect(data_dir: Path, writer: str) -> int:
    """Finish every journal of ``writer`` whose grace period is over; return how many remain."""
    remaining = 0
    for journal in _journals(data_dir, writer):
        entry = _read_journal(journal)
        _roll_forward(data_dir, journal, entry)
        remaining += journal.exists()
    return remaining


def pending_obsolete(data_dir: Path, writer: str) -> set[Path]:
    """Files of ``writer`` retired by a compaction but still inside their grace period."""
    out: set[Path] = set()
    for journal in _journals(data_dir, writer):
        out.update(data_dir / rel for rel in _read_journal(journal)["obsolete"])
    return out


def retired_files(data_dir: Path) -> set[Path]:
    """Files of any writer whose rows are already in a published merged file.

    Only journals whose creates are done (rewritten to hold just the obsolete list) count,
    so skipping these files never hides a row; Python readers skip them to read each row
    once even inside a compaction's grace period.
    """
    out: set[Path] = set()
    directory = state_dir(data_dir)
    for journal in sorted(directory.glob("txn-*.json")) if directory.is_dir() else ():
        try:
            entry = _read_journal(journal)
        except StorageError:
            continue  # being replaced or removed right now: skipping nothing is always safe
        if not entry["create"]:
            out.update(Path(data_dir) / rel for rel in entry["obsolete"])
    return out


def recover(data_dir: Path, writer: str, roots: Iterable[Path]) -> int:
    """Roll every journal of ``writer`` forward and delete its orphan tmp files.

    Returns the number of journals rolled forward plus orphans removed (0 after a clean stop).
    """
    fixed = 0
    for journal in _journals(data_dir, writer):
        entry = _read_journal(journal)
        if entry["create"] or entry["delete"]:
            fixed += 1
        _roll_forward(data_dir, journal, entry)
    for root in roots:
        for pattern in PARTITION_GLOBS:
            for orphan in Path(root).glob(f"{pattern}/.*-{writer}-*.tmp"):
                orphan.unlink(missing_ok=True)
                fixed += 1
    for orphan in state_dir(data_dir).glob(f".txn-{writer}-*.tmp") if state_dir(data_dir).is_dir() else ():
        orphan.unlink(missing_ok=True)
    return fixed


def _read_journal(journal: Path) -> dict:
    try:
        entry = json.loads(journal.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StorageError(f"unreadable publish journal {journal}: {exc}") from exc
    if not isinstance(entry, dict) or not {"create", "delete", "obsolete", "delete_after"} <= set(entry):
        raise StorageError(f"malformed publish journal {journal}")
    return entry
