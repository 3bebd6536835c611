"""Two rules for every byte klinestore writes: never through a planted symlink, never into storage's own trees.

* **New files** (a ``.tmp`` before its rename, a status snapshot, a WAL segment's ``.corrupt``
  copy) are created with ``O_CREAT | O_EXCL``: whatever already sits at that name (a stale
  file, or a symlink someone planted pointing at ``~/.bashrc``) is unlinked first, never
  opened, and if something reappears in between the create fails rather than follows it.
  The rename that publishes the file replaces a symlink at the final name; it never writes
  through it.
* **Output files** that users name (``--out`` of ``sql``, ``export``, ``chart``, ``dataqual
  --plot``) may not land in what storage and the service own: the datasets (``bars/``,
  ``bars_spot/``), ``wal/``, ``state/``, ``tables/`` and the service's files at the top of
  the data directory. A Parquet file dropped into ``bars/`` would otherwise be read as bars
  by every query (a rogue ``version`` wins the dedup) or break them all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from klinestore.storage.errors import StorageError
from klinestore.storage.layout import AGG_TRADES_DIR, DATASETS, dataset_root, state_dir, wal_dir

#: Directories under the data directory that belong to storage and the service.
_MANAGED_DIRS = frozenset(
    {dataset_root(Path(), m).name for m in DATASETS} | {AGG_TRADES_DIR}
    | {state_dir(Path()).name, wal_dir(Path(), "s0000").parent.name, "tables"}  # klinestore.storage.tables.TABLES_DIR
)
#: Files at the top of the data directory that the service writes (status, DataQual database).
_MANAGED_SUFFIXES = (".json", ".duckdb", ".duckdb.wal")
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def create_new(path: Path, mode: str = "wb", encoding: str | None = None) -> IO[Any]:
    """A fresh file at ``path``, open for writing; a file or symlink already there is removed, never followed."""
    path = Path(path)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
    return os.fdopen(fd, mode, encoding=encoding)


def prepare_dirs(*dirs: Path) -> None:
    """Create ``dirs`` (and parents) or raise one :class:`StorageError` naming the one that cannot
    be: a file where a directory belongs, a read-only or virtual file system (``/proc``)."""
    for directory in dirs:
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StorageError(f"{directory} must be a directory, but a file is there") from None
        except OSError as exc:
            raise StorageError(f"cannot create directory {directory}: {exc.strerror}") from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise StorageError(f"directory {directory} is not writable")


def refuse_symlink(path: Path, what: str) -> None:
    """Raise :class:`StorageError` if ``path`` is a symlink (storage never reads or repairs through one)."""
    if Path(path).is_symlink():
        raise StorageError(f"{what} {path} is a symlink; klinestore does not follow symlinks it did not create")


def check_output_path(out: Path, data_dir: Path) -> Path:
    """``out`` if a user's output file may go there, else :class:`StorageError` saying why."""
    target = Path(out).resolve()
    try:
        parts = target.relative_to(Path(data_dir).resolve()).parts
    except ValueError:
        return Path(out)
    if not parts or parts[0] in _MANAGED_DIRS or (len(parts) == 1 and parts[0].endswith(_MANAGED_SUFFIXES)):
        raise StorageError(
            f"{out} is inside klinestore's own files in {data_dir} (bars/, wal/, state/, tables/, status and "
            "DataQual files); write output elsewhere, e.g. a directory of its own"
        )
    return Path(out)
