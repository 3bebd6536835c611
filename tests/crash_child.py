"""Child process of the crash tests: runs one storage operation and freezes at a chosen syscall.

``python crash_child.py OP DATA_DIR HOOK N [ARCHIVES...]``: the N-th call of ``os.HOOK``
(``replace`` = a publish's renames, the journal's first; ``unlink`` = its deletes) prints
``frozen`` and sleeps, so the parent's SIGKILL lands exactly there.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from klinestore.config import StorageConfig
from klinestore.storage.importer import import_archives
from klinestore.storage.store import BarStore
from storage_support import bar

CONFIG = StorageConfig(compaction_min_files=3, compaction_grace=0.0, wal_fsync_window=0.05)


def freeze_at(name: str, nth: int) -> None:
    original = getattr(os, name)
    calls = 0

    def hooked(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == nth:
            print("frozen", flush=True)
            time.sleep(600)
        return original(*args, **kwargs)

    setattr(os, name, hooked)
    if name == "unlink":  # Path.unlink calls os.unlink
        Path.unlink = lambda self, missing_ok=False: (hooked(self) if self.exists() or not missing_ok else None)  # type: ignore[method-assign]


def main() -> None:
    op, data_dir, hook, nth, *archives = sys.argv[1:]
    data = Path(data_dir)
    if op == "import":
        freeze_at(hook, int(nth))
        import_archives([Path(a) for a in archives], data, CONFIG)
    else:
        store = BarStore(data, CONFIG)
        store.open()
        if op == "flush":
            store.append([bar(s, 100 + i) for i in range(30) for s in ("BTCUSDT", "ETHUSDT")])
            freeze_at(hook, int(nth))
            store.flush()
        else:
            freeze_at(hook, int(nth))
            store.compact()
    print("finished", flush=True)


if __name__ == "__main__":
    main()
