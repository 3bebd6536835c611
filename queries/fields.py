"""Reading the service's snapshot (status.json) defensively: it comes from another version.

An older service lacks fields, a newer one adds some, and a field may change type. These
accessors return an empty value of the expected kind instead of raising, so ``status`` and
the metrics endpoint degrade to "unknown" rather than fail.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def epoch_ms(value: Any) -> int | None:
    """Epoch ms of an ISO string, epoch seconds (a float, as ``time.time()``) or epoch ms (a large int)."""
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return None
    number = as_number(value)
    if number is None:
        return None
    return int(number) if number > 1e11 else int(number * 1000)


def last_flush_ms(snapshot: dict[str, Any]) -> int | None:
    """When the service last flushed to Parquet (top-level ``last_flush`` or ``storage.last_flush``)."""
    return epoch_ms(snapshot.get("last_flush", as_dict(snapshot.get("storage")).get("last_flush")))


def dataqual_scores(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """``dataqual`` as rows with a ``symbol``: a ``{symbol: score | {score, ...}}`` map or a list of rows."""
    given = snapshot.get("dataqual")
    if isinstance(given, dict):
        return [{"symbol": s, **(v if isinstance(v, dict) else {"score": v})} for s, v in given.items()]
    return [dict(row) for row in as_list(given) if isinstance(row, dict) and "symbol" in row]
