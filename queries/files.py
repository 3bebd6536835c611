"""Output files that appear whole or not at all: written under a temporary name, then renamed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from klinestore.queries.errors import ExportError
from klinestore.storage import fsync_dir, fsync_file, tmp_path
from klinestore.storage.fsguard import create_new


@contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and renamed over it.

    On any error the temporary file is removed and ``target`` is left as it was, so a reader
    (a backtest picking the file up, a second export) never sees half a file.
    """
    target = Path(target)
    if target.is_dir():
        raise ExportError(f"{target} is a directory; give a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {target.parent}: {exc.strerror}") from None
    tmp = tmp_path(target)
    try:
        create_new(tmp).close()  # the writers below reopen this regular file, never a planted symlink
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
