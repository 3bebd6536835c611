"""Run a :class:`Simulator` on its own event loop in a daemon thread, for synchronous callers.

Tests and ``klinestore run --sim`` use it: ``with SimThread(SimConfig(speed=60)) as sim:``
gives ``sim.ws_url`` and ``sim.rest_url`` and thread-safe ``truth()``, ``inject()``,
``ledger()`` and ``now_ms()``; leaving the block stops the simulator and joins the thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from klinestore.sim.config import SimConfig
from klinestore.sim.errors import SimError
from klinestore.sim.server import Simulator

T = TypeVar("T")
START_TIMEOUT = 30.0


class SimThread:
    """A started simulator on a background thread. ``SimThread(config)`` or ``SimThread(**options)``."""

    def __init__(self, config: SimConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise TypeError("pass a SimConfig or options, not both")
        self.config = config if config is not None else SimConfig(**options)
        self.simulator = Simulator(self.config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> SimThread:
        if self._thread is not None:
            raise SimError("this SimThread was already started")
        self._thread = threading.Thread(target=self._run, name="klinestore-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise SimError("the simulator did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.simulator.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.simulator.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the simulator (connections closed) and join the thread; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        if self._stop is not None:
            loop.call_soon_threadsafe(self._stop.set)
        thread.join(timeout)

    def __enter__(self) -> SimThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the simulator's loop and return its result (or raise its error)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            raise SimError("the simulator is not running")
        if threading.current_thread() is self._thread:
            return fn(*args)  # already on the simulator's loop (a callback of its own)
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=60)

    @property
    def ws_url(self) -> str:
        return self.simulator.ws_url

    @property
    def rest_url(self) -> str:
        return self.simulator.rest_url

    def now_ms(self) -> int:
        return self.simulator.now_ms()

    def truth(self, symbol: str, interval: str) -> list[list[int | str]]:
        return self.call(self.simulator.truth, symbol, interval)

    def truth_of(self, symbol: str, kind: str, interval: str = "1m") -> list[Any]:
        return self.call(self.simulator.truth_of, symbol, kind, interval)

    def inject(self, fault: dict[str, Any]) -> dict[str, Any]:
        return self.call(self.simulator.inject, fault)

    def ledger(self) -> dict[str, int]:
        return self.call(self.simulator.ledger)

    def connections(self) -> list[dict[str, Any]]:
        return self.call(self.simulator.connections)

    def stats(self) -> dict[str, Any]:
        return self.call(self.simulator.stats)

    def order_book(self, symbol: str, update_id: int | None = None) -> dict[str, Any]:
        return self.call(self.simulator.order_book, symbol, update_id)

    def list_symbol(self, symbol: str, at_ms: int | None = None) -> dict[str, Any]:
        return self.call(self.simulator.list_symbol, symbol, at_ms)

    def delist_symbol(self, symbol: str, at_ms: int | None = None) -> dict[str, Any]:
        return self.call(self.simulator.delist_symbol, symbol, at_ms)
