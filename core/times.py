"""UTC epoch milliseconds as ISO text, the one time format of status files and tables."""

from __future__ import annotations

from datetime import datetime, timezone


def iso(ms: int | None) -> str | None:
    """``2024-01-01T00:00:00.000Z`` for epoch milliseconds; ``None`` stays ``None``."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
