"""Event-loop lag: how late a timer fires, the visible sign of ingest falling behind.

Frames are handled as the socket is read, so a saturated ingest shows up not as a growing
queue but as a late event loop (and, underneath, a full kernel buffer pushing back on the
exchange). A 100 ms probe measures it; status shows the last value and the maximum.
"""

from __future__ import annotations

import asyncio

PROBE_S = 0.1


class LoopLag:
    def __init__(self, every: float = PROBE_S) -> None:
        self.every = every
        self.last = 0.0
        self.max = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._probe(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.every)
            self.last = max(0.0, loop.time() - started - self.every)
            self.max = max(self.max, self.last)
