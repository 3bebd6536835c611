"""``<data-dir>/status.json``, written atomically: a reader never sees a torn file.

The snapshot itself is built by the service (:func:`klinestore.ingest.status.snapshot` and
the jobs' additions); this module owns the bytes: a temporary file in the same directory,
fsynced, renamed over the old one, then the directory fsynced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from klinestore.storage.fsguard import create_new

STATUS_FILE = "status.json"


def write_status(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (tmp + fsync + rename + directory fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = json.dumps(data, indent=2, default=str).encode()
    with create_new(tmp) as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
