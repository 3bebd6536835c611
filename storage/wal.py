"""The write-ahead log: closed bars are durable here before they count as received.

Durability contract of :meth:`Wal.append`:

* when it returns, the record has been handed to the kernel with ``write(2)``: a ``kill -9``
  of the process one instruction later loses nothing;
* it is on stable storage (survives a power cut or kernel crash) at most ``fsync_window``
  seconds later: a background thread ``fdatasync``s once per window for all the appends of
  that window (group commit), so the event loop never waits for the disk. With
  ``fsync_window == 0`` every append fsyncs before it returns; :meth:`sync` forces it now.

Format: numbered segments ``<seq:020d>.wal``, each a run of records ``[u32 length][u32 crc32]
[msgpack (stamp, [Bar, ...])]`` (little endian). A crash can only tear the tail of the segment
being written; :meth:`open` truncates it at the last whole record. A record that is whole but
fails its CRC (disk corruption) is moved aside to ``<seg>.corrupt`` with everything after it
in that segment, counted, and replay goes on. Bars are keyed and versioned by their stamp, so
replaying a record twice changes nothing. Segments are sealed by :meth:`rotate` and deleted by
the flush that put their rows into Parquet (in the same atomic publish).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from klinestore.core.schema import Bar
from klinestore.core.times import iso
from klinestore.storage.errors import WalError
from klinestore.storage.fsguard import NOFOLLOW, create_new, refuse_symlink
from klinestore.storage.txn import fsync_dir

log = logging.getLogger(__name__)
_HEADER = struct.Struct("<II")
MAX_RECORD = 64 << 20
SEGMENT_BYTES = 64 << 20

Record = tuple[int, list[Any]]  # (stamp, rows): Bars, unless the log was opened for another row type
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(tuple[int, list[Bar]])


def decoder_of(row_type: type) -> msgspec.msgpack.Decoder:
    """The record decoder of a log of ``row_type`` rows (a msgspec struct; :class:`Bar` by default)."""
    return _decoder if row_type is Bar else msgspec.msgpack.Decoder(tuple[int, list[row_type]])  # type: ignore[valid-type]


@dataclass(slots=True)
class Replay:
    """What :meth:`Wal.open` found on disk."""

    records: list[Record] = field(default_factory=list)
    segments: int = 0
    torn_bytes: int = 0  # a torn tail cut off (a crash mid-append)
    corrupt_records: int = 0  # corrupt spans (records failing their CRC), moved aside
    corrupt: list[tuple[str, CorruptSpan]] = field(default_factory=list)  # (segment name, span)

    @property
    def bars(self) -> int:
        return sum(len(bars) for _, bars in self.records)


def encode(stamp: int, bars: Sequence[Any]) -> bytes:
    payload = _encoder.encode((stamp, bars))
    if len(payload) > MAX_RECORD:
        raise WalError(f"WAL record of {len(payload)} bytes exceeds {MAX_RECORD}; append fewer bars at once")
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_segment(data: bytes, decoder: msgspec.msgpack.Decoder = _decoder) -> tuple[list[Record], int, bool]:
    """Records of a segment, the offset of the first bad byte, and whether it was corrupt (vs torn)."""
    records: list[Record] = []
    offset, size = 0, len(data)
    while offset < size:
        record, end, corrupt = _record_at(data, offset, decoder)
        if record is None:
            return records, offset, corrupt
        records.append(record)
        offset = end
    return records, offset, False


def _record_at(data: bytes, offset: int, decoder: msgspec.msgpack.Decoder = _decoder) -> tuple[Record | None, int, bool]:
    """The record at ``offset`` and where it ends, or None and whether the bytes there are corrupt (vs torn)."""
    size = len(data)
    if size - offset < _HEADER.size:
        return None, offset, False
    length, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    if length == 0 or length > MAX_RECORD:
        return None, offset, size - offset > _HEADER.size + MAX_RECORD or any(data[offset:])
    if size - start < length:
        return None, offset, False
    payload = data[start:start + length]
    if zlib.crc32(payload) != crc:
        return None, offset, True
    try:
        return decoder.decode(payload), start + length, False
    except msgspec.DecodeError:
        return None, offset, True


@dataclass(slots=True)
class CorruptSpan:
    """Bytes of a segment that hold no whole record, between records that are whole."""

    start: int
    end: int
    #: Open times (ms) and intervals of the whole records on either side: the bars set aside
    #: were appended between them (closed bars arrive in time order).
    low_ms: int | None = None
    high_ms: int | None = None
    intervals: tuple[str, ...] = ()


def scan_segment(data: bytes, decoder: msgspec.msgpack.Decoder = _decoder) -> tuple[list[Record], list[CorruptSpan], int]:
    """Every whole record of a segment, past corrupt ones (the next record is found by its
    CRC), the corrupt spans, and where a torn tail starts (``len(data)`` if none)."""
    records: list[Record] = []
    spans: list[CorruptSpan] = []
    offset, size = 0, len(data)
    while offset < size:
        record, end, corrupt = _record_at(data, offset, decoder)
        if record is not None:
            records.append(record)
            offset = end
            continue
        resume = _next_record(data, offset + 1, decoder)
        if resume is None:
            if corrupt:
                spans.append(_span(offset, size, records, None))
                return records, spans, size
            return records, spans, offset  # a torn tail: the process died mid-append
        following, _, _ = _record_at(data, resume, decoder)
        spans.append(_span(offset, resume, records, following))
        offset = resume
    return records, spans, size


def _next_record(data: bytes, offset: int, decoder: msgspec.msgpack.Decoder) -> int | None:
    for at in range(offset, len(data) - _HEADER.size):
        length, crc = _HEADER.unpack_from(data, at)
        if 0 < length <= min(MAX_RECORD, len(data) - at - _HEADER.size) and _record_at(data, at, decoder)[0] is not None:
            return at
    return None


def _span(start: int, end: int, before: list[Record], after: Record | None) -> CorruptSpan:
    near = [*(before[-1][1] if before else ()), *(after[1] if after else ())]
    if not near or not isinstance(near[0], Bar):  # another row type: no bar times to bound the loss with
        return CorruptSpan(start, end)
    opens = [b.open_time for b in near]
    return CorruptSpan(start, end, min(opens), max(opens), tuple(sorted({b.interval for b in near})))


def segment_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal")) if directory.is_dir() else []


def read_records(directory: Path, row_type: type = Bar) -> list[Record]:
    """Every whole record under ``directory``, read-only (safe while a writer appends)."""
    out: list[Record] = []
    decoder = decoder_of(row_type)
    for path in segment_paths(directory):
        try:
            out.extend(scan_segment(path.read_bytes(), decoder)[0])
        except FileNotFoundError:
            continue  # trimmed by its writer meanwhile: its rows are in Parquet now
    return out


class Wal:
    """One writer's log. Thread-safe: the event loop appends while a flush thread rotates."""

    def __init__(self, directory: Path, *, fsync_window: float = 1.0, row_type: type = Bar) -> None:
        self.directory = Path(directory)
        self._decoder = decoder_of(row_type)
        self.fsync_window = fsync_window
        self.appended_bytes = 0
        self.fsyncs = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._fd = -1
        self._seq = 0
        self._offset = 0
        self._dirty = False
        self._closed = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> Replay:
        """Recover the segments on disk, then start a fresh segment for appends."""
        self.directory.mkdir(parents=True, exist_ok=True)
        replay = Replay()
        paths = segment_paths(self.directory)
        for path in paths:
            self._recover_segment(path, replay)
        replay.segments = len(paths)
        self._seq = int(paths[-1].stem) + 1 if paths else 1
        self._open_segment()
        self._closed = False
        if self.fsync_window > 0:
            self._thread = threading.Thread(target=self._sync_loop, name=f"wal-sync-{self.directory.name}", daemon=True)
            self._thread.start()
        return replay

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._sync_locked()
            os.close(self._fd)
            self._fd = -1

    # -- the hot path ----------------------------------------------------------------------

    def append(self, stamp: int, bars: Sequence[Any]) -> None:
        """Write one record (see the module docstring for what is durable when)."""
        record = encode(stamp, bars)
        with self._lock:
            if self._closed:
                raise WalError("WAL is closed")
            try:
                written = os.write(self._fd, record)
                while written < len(record):
                    written += os.write(self._fd, record[written:])
            except OSError as exc:
                self._undo_partial()
                raise WalError(f"cannot append to {self._path(self._seq)}: {exc}") from exc
            self._offset += len(record)
            self.appended_bytes += len(record)
            if self.fsync_window <= 0:
                self._sync_locked()
            elif not self._dirty:
                self._dirty = True
                self._wake.notify()
            if self._offset >= SEGMENT_BYTES:
                self._roll_locked()

    def sync(self) -> None:
        """Make every record appended so far durable now."""
        with self._lock:
            if not self._closed:
                self._sync_locked()

    def rotate(self) -> list[Path]:
        """Seal the current segment and start a new one; return every sealed segment.

        A flush calls this when it takes the pending bars: everything in the returned
        segments is then in the flush's batch, so they are deleted when it is published.
        """
        with self._lock:
            if self._closed:
                raise WalError("WAL is closed")
            self._roll_locked()
            current = self._seq
        return [p for p in segment_paths(self.directory) if int(p.stem) < current]

    # -- internals -------------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}.wal"

    def _open_segment(self) -> None:
        self._fd = os.open(self._path(self._seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND | NOFOLLOW, 0o644)
        self._offset = 0
        fsync_dir(self.directory)

    def _roll_locked(self) -> None:
        self._sync_locked()
        os.close(self._fd)
        self._seq += 1
        self._open_segment()

    def _sync_locked(self) -> None:
        if self._fd >= 0:
            os.fdatasync(self._fd)
            self.fsyncs += 1
        self._dirty = False

    def _undo_partial(self) -> None:
        try:
            os.ftruncate(self._fd, self._offset)
        except OSError:
            self._closed = True  # cannot restore a clean tail: refuse further appends

    def _sync_loop(self) -> None:
        while True:
            with self._lock:
                while not self._dirty and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                self._wake.wait(self.fsync_window)  # let the window's appends gather
                if self._closed or not self._dirty:
                    continue
                fd = os.dup(self._fd)
                self._dirty = False
            try:
                os.fdatasync(fd)  # outside the lock: appends go on meanwhile
                self.fsyncs += 1
            finally:
                os.close(fd)

    def _recover_segment(self, path: Path, replay: Replay) -> None:
        refuse_symlink(path, "WAL segment")  # repairing one would truncate whatever it points at
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WalError(f"cannot read WAL segment {path}: {exc}") from exc
        records, spans, torn = scan_segment(data, self._decoder)
        replay.records.extend(records)
        if not spans and torn == len(data):
            return
        replay.torn_bytes += len(data) - torn
        if not spans:
            with open(path, "r+b") as handle:
                handle.truncate(torn)
                os.fsync(handle.fileno())
            return
        replay.corrupt_records += len(spans)
        with create_new(path.with_suffix(".corrupt")) as handle:
            for span in spans:
                handle.write(data[span.start:span.end])
        kept = bytearray()
        cursor = 0
        for span in spans:
            kept += data[cursor:span.start]
            cursor = span.end
        kept += data[cursor:torn]
        with create_new(path.with_suffix(".tmp")) as handle:  # the whole records only, atomically
            handle.write(kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(path.with_suffix(".tmp"), path)
        fsync_dir(path.parent)
        for span in spans:
            replay.corrupt.append((path.name, span))
            log.warning("WAL segment %s: %d corrupt bytes set aside to %s; the bars appended there (open times "
                        "%s..%s, intervals %s) are lost and recorded as a gap", path, span.end - span.start,
                        path.with_suffix(".corrupt").name, iso(span.low_ms), iso(span.high_ms),
                        ",".join(span.intervals) or "unknown")
