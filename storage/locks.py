"""One process per writer: an advisory lock file per writer name under ``state/``.

The live service holds its shard's lock for as long as its BarStore is open; the importer and
``klinestore compact`` take ``imp`` (and, to compact a shard's files, that shard's lock if no
service holds it). flock locks vanish with the process, so a ``kill -9`` never leaves a stale
lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from klinestore.storage.errors import StorageError
from klinestore.storage.fsguard import NOFOLLOW
from klinestore.storage.layout import state_dir


class WriterLock:
    """An exclusive lock on one writer name of one data directory."""

    def __init__(self, data_dir: Path, writer: str) -> None:
        self.path = state_dir(data_dir) / f"{writer}.lock"
        self.writer = writer
        self._fd: int | None = None

    def acquire(self, *, blocking: bool = False) -> bool:
        """Take the lock; False if another process holds it (and ``blocking`` is off)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # never through a planted symlink: the pid written below would truncate its target
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {self.path}: {exc.strerror} (symlinks are refused)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {self.path}: {exc}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """The pid written by the process that holds (or last held) the lock."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriterLock:
        if not self.acquire(blocking=True):
            raise StorageError(f"cannot lock {self.path}")
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
