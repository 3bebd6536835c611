"""Errors of the storage package.

Tree::

    KlinestoreError
    └── StorageError
        ├── WalError          a WAL segment that cannot be written or replayed
        ├── BarError          a bar that cannot be stored (bad symbol, interval, source, times)
        ├── DatasetError      a Parquet file or partition that cannot be written or read
        └── ArchiveError      a bad archive file (names the file and the line)

pyarrow's, Polars' and DuckDB's exceptions are translated into these at the boundary.
"""

from __future__ import annotations

from klinestore.core.errors import KlinestoreError


class StorageError(KlinestoreError):
    """Root of storage errors."""


class WalError(StorageError):
    """The write-ahead log cannot be written or replayed."""


class BarError(StorageError, ValueError):
    """A bar that cannot be stored: unknown interval or source, bad symbol, misaligned times."""


class DatasetError(StorageError):
    """A Parquet file or partition cannot be written or read."""


class ArchiveError(StorageError):
    """A bad archive file; the message names the file and, where known, the line."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
