"""Streams, their subscribers, and the pump that feeds them on the exchange clock.

One channel per stream name, shared by all its subscribers, so a payload is built once and
fanned out. Channels sit in a heap by the exchange time they are next due; the pump sleeps
until the earliest (at least one real ``tick``, so at speed 60 a stream gets at most one
coalesced update per tick), then lets every due channel produce. A stream with no
subscriber left has no channel: subscribing again starts it fresh, as on Binance.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from typing import Protocol

from klinestore.sim import encode
from klinestore.sim.channels import Channel, Context
from klinestore.sim.clock import ExchangeClock
from klinestore.sim.control import deliverable
from klinestore.sim.feeds import make_channel

log = logging.getLogger(__name__)

MAX_SLEEP = 0.05  # real seconds: new subscriptions wait at most this long for their first tick
_RETRY_MS = 1000


class Subscriber(Protocol):
    id: int
    route: object
    subscriptions: dict[str, None]

    def deliver(self, payload: bytes, wrapped: bytes) -> None: ...

    def flush(self) -> bool: ...


class Hub:
    """Channels by stream name, and the pump."""

    def __init__(self, ctx: Context, clock: ExchangeClock, tick: float) -> None:
        self.ctx = ctx
        self.clock = clock
        self.tick = tick
        self.channels: dict[str, Channel] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._seq = 0
        self._scheduled: dict[str, int] = {}

    # --- subscriptions ----------------------------------------------------------------------

    def subscribe(self, session: Subscriber, names: tuple[str, ...]) -> None:
        for name in names:
            session.subscriptions[name] = None
            stream = deliverable(name, session.route)  # type: ignore[arg-type]
            if stream is None:
                continue  # acknowledged, delivers nothing (wrong route, /market on the legacy URL, uppercase)
            channel = self.channels.get(name)
            if channel is None:
                channel = make_channel(self.ctx, stream, self.clock.now_ms())
                if channel is None:
                    continue
                self.channels[name] = channel
                self._schedule(channel)
            channel.subscribers[session.id] = session

    def unsubscribe(self, session: Subscriber, names: tuple[str, ...]) -> None:
        for name in names:
            session.subscriptions.pop(name, None)
            channel = self.channels.get(name)
            if channel is not None:
                channel.subscribers.pop(session.id, None)
                if not channel.subscribers:
                    del self.channels[name]
                    self._scheduled.pop(name, None)

    def forget(self, session: Subscriber) -> None:
        self.unsubscribe(session, tuple(session.subscriptions))

    # --- the pump ------------------------------------------------------------------------

    def _schedule(self, channel: Channel) -> None:
        self._seq += 1
        self._scheduled[channel.name] = self._seq
        heapq.heappush(self._heap, (channel.next_due, self._seq, channel.name))

    def pump(self, now: int) -> int:
        """Let every channel due by ``now`` produce and fan out; returns frames produced."""
        produced = 0
        faults = self.ctx.faults
        touched: dict[int, Subscriber] = {}
        while self._heap and self._heap[0][0] <= now:
            _, seq, name = heapq.heappop(self._heap)
            channel = self.channels.get(name)
            if channel is None or self._scheduled.get(name) != seq:
                continue
            try:
                payloads = channel.produce(now)
            except Exception:
                log.exception("stream %s failed to produce; retrying in %d ms", name, _RETRY_MS)
                payloads = []
                channel.next_due = now + _RETRY_MS
            if payloads and not faults.stream_stalled(name):
                subscribers: list[Subscriber] = list(channel.subscribers.values())  # type: ignore[arg-type]
                for payload in payloads:
                    wrapped = encode.combined(name, payload)
                    for session in subscribers:
                        session.deliver(payload, wrapped)
                for session in subscribers:
                    touched[session.id] = session
                produced += len(payloads)
            channel.next_due = max(channel.next_due, now + 1)
            self._schedule(channel)
        for session in touched.values():
            session.flush()
        return produced

    def next_due(self) -> int | None:
        while self._heap:
            due, seq, name = self._heap[0]
            if self._scheduled.get(name) == seq and name in self.channels:
                return due
            heapq.heappop(self._heap)
        return None

    async def run(self) -> None:
        """Pump forever: wake when the next channel is due, at least one tick apart."""
        while True:
            self.pump(self.clock.now_ms())
            due = self.next_due()
            delay = MAX_SLEEP if due is None else self.clock.real_until(due) + 0.0005
            await asyncio.sleep(min(MAX_SLEEP, max(self.tick, delay)))
