"""User callbacks (``on_kline_close``, ``on_gap``), each isolated from the others and from ingest.

Every callback gets its own bounded queue and worker task. The dispatcher only puts the
arguments on the queues (no await on the hot path), so a slow callback delays nobody but
itself, and a failing one is counted and logged (rate-limited) while the others carry on.
When a callback falls ``queue_size`` calls behind, further calls for it are dropped and
counted: memory stays bounded however slow user code is. Calls reach each callback in order.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from klinestore.ingest.throttle import LogThrottle

log = logging.getLogger(__name__)

#: Calls a callback may fall behind before further calls to it are dropped.
QUEUE_SIZE = 10_000

Callback = Callable[..., Awaitable[None] | None]


class _Subscriber:
    __slots__ = ("fn", "name", "queue", "task", "calls", "failures", "dropped")

    def __init__(self, fn: Callback, queue_size: int) -> None:
        self.fn = fn
        self.name = getattr(fn, "__qualname__", repr(fn))
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(queue_size)
        self.task: asyncio.Task[None] | None = None
        self.calls = 0
        self.failures = 0
        self.dropped = 0


class Hook:
    """A named set of callbacks called with the same arguments."""

    def __init__(self, name: str, *, queue_size: int = QUEUE_SIZE) -> None:
        self.name = name
        self.queue_size = queue_size
        self._subs: list[_Subscriber] = []
        self._log = LogThrottle(log)

    def add(self, fn: Callback) -> Callback:
        """Register ``fn`` (async, or plain if it is quick); returns it, so it works as a decorator."""
        if not callable(fn):
            raise TypeError(f"{self.name} callback must be callable, got {fn!r}")
        self._subs.append(_Subscriber(fn, self.queue_size))
        return fn

    def remove(self, fn: Callback) -> None:
        for sub in [s for s in self._subs if s.fn is fn]:
            if sub.task is not None:
                sub.task.cancel()
            self._subs.remove(sub)

    def __bool__(self) -> bool:
        return bool(self._subs)

    def emit(self, *args: Any) -> None:
        """Queue a call to every callback; never blocks, never raises."""
        for sub in self._subs:
            try:
                sub.queue.put_nowait(args)
            except asyncio.QueueFull:
                sub.dropped += 1
                self._log.warning(f"{self.name}:{sub.name}:full", "%s callback %s is %d calls behind; dropping",
                                  self.name, sub.name, self.queue_size)
                continue
            if sub.task is None:
                try:
                    sub.task = asyncio.get_running_loop().create_task(self._worker(sub), name=f"{self.name}:{sub.name}")
                except RuntimeError:  # no loop yet: the call waits in the queue for start()
                    pass

    def start(self) -> None:
        """Start workers for callbacks that have calls waiting (needs a running loop)."""
        loop = asyncio.get_running_loop()
        for sub in self._subs:
            if sub.task is None:
                sub.task = loop.create_task(self._worker(sub), name=f"{self.name}:{sub.name}")

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every queued call has run (or ``timeout``); True if all ran."""
        try:
            async with asyncio.timeout(timeout):
                for sub in self._subs:
                    if sub.task is not None:
                        await sub.queue.join()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        for sub in self._subs:
            if sub.task is not None:
                sub.task.cancel()
        await asyncio.gather(*(s.task for s in self._subs if s.task is not None), return_exceptions=True)
        for sub in self._subs:
            sub.task = None

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            s.name: {"calls": s.calls, "failures": s.failures, "dropped": s.dropped, "queued": s.queue.qsize()}
            for s in self._subs
        }

    async def _worker(self, sub: _Subscriber) -> None:
        while True:
            args = await sub.queue.get()
            try:
                result = sub.fn(*args)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - user code: count, log, carry on
                sub.failures += 1
                self._log.warning(f"{self.name}:{sub.name}:error", "%s callback %s failed: %r", self.name, sub.name, exc)
            finally:
                sub.calls += 1
                sub.queue.task_done()
