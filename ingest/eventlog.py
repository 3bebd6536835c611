"""Connection state transitions, every one recorded: (time, connection, from, to, reason).

Bounded: the newest ``maxlen`` transitions are kept in memory; each has a sequence number so
a writer (the ``connection_events`` table) can take what is new since its last visit and see
if it fell behind (``dropped``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Transition:
    seq: int
    ts_ms: int  # exchange time when the clock is synced, else the local wall clock
    conn_id: str
    from_state: str
    to_state: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class EventLog:
    """The newest ``maxlen`` connection transitions, oldest first."""

    def __init__(self, maxlen: int = 10_000, *, now_ms: Callable[[], int | None] | None = None) -> None:
        self._events: deque[Transition] = deque(maxlen=maxlen)
        self._now_ms = now_ms or (lambda: None)
        self.total = 0

    def record(self, conn_id: str, from_state: str, to_state: str, reason: str) -> Transition:
        ts = self._now_ms()
        if ts is None:
            ts = int(time.time() * 1000)
        self.total += 1
        event = Transition(self.total, ts, conn_id, from_state, to_state, reason)
        self._events.append(event)
        return event

    @property
    def dropped(self) -> int:
        """Transitions that fell out of the bound."""
        return self.total - len(self._events)

    def since(self, seq: int = 0) -> list[Transition]:
        """Transitions with a sequence number above ``seq`` (still in memory), oldest first."""
        return [e for e in self._events if e.seq > seq]

    def recent(self, n: int = 20, conn_id: str | None = None) -> list[Transition]:
        events = [e for e in self._events if conn_id is None or e.conn_id == conn_id]
        return events[-n:]
