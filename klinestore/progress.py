"""What ``klinestore run`` tells the person who started it: progress, trouble worth a line, a summary.

:class:`Watch` is the sans-I/O part: fed one :class:`Sample` of the service's counters at a
time, it returns the progress line and the notices to log:

* **no route**: while no connection is subscribed, connection attempts fail to open
  (``gaierror``, refused, timed out, HTTP 451...): after ``NO_ROUTE_FAILURES`` of them one
  ERROR names the URL, the error and what to check, once per outage (a subscription ends
  it). The connections keep retrying with their backoff either way;
* **bulk rejects**: updates rejected for one reason (``stale``: older than the bars already
  held, as when a simulator's clock restarts behind the stored bars) are logged once per
  burst, when the burst reaches ``BURST`` rejects, with the count and the cause, and once
  more at its end with the total; single rejects stay counters in status.json.

:class:`Progress` is the asyncio glue: a live line on a terminal, otherwise a log line every
``every`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

log = logging.getLogger("klinestore.run")

NO_ROUTE_FAILURES = 2
BURST = 100
#: Why an update is rejected, in a user's words (reasons without an entry are named as they are).
CAUSES: dict[str, str] = {
    "stale": "updates of bars older than the newest one already held (the exchange's clock is behind the stored "
             "bars: a simulator restarted behind them, or a replay)",
    "duplicate": "updates already held (the exchange resent them)",
    "future": "bars ahead of the exchange clock (clock skew)",
    "malformed": "frames that do not decode",
    "invalid_history": "history rows that fail validation",
}
_OPEN_FAILED = {"RECONNECTING", "FAILED"}  # reached from CONNECTING: the connection did not open


@dataclass(frozen=True, slots=True)
class Sample:
    """The service's counters at one instant (``at``: monotonic seconds)."""

    at: float
    connections: int
    subscribed: int
    messages: int
    closed_bars: int
    gaps: int
    rejected: Mapping[str, int]
    dataqual: float | None
    transitions: Sequence[tuple[str, str, str, str]] = ()  # (conn_id, from, to, reason) since the last sample


@dataclass(slots=True)
class _Burst:
    start_count: int
    started_at: float
    reported: bool = False


@dataclass(slots=True)
class Watch:
    """Progress text and notices from successive samples (see the module docstring)."""

    url: str
    first: Sample | None = None
    last: Sample | None = None
    rate: float = 0.0
    failures: int = 0
    route_reported: bool = False
    bursts: dict[str, _Burst] = field(default_factory=dict)

    def observe(self, sample: Sample) -> list[tuple[int, str]]:
        """Take a sample; the notices to log as (level, message)."""
        notices = self._route(sample) + self._rejects(sample)
        if self.last is not None and sample.at > self.last.at:
            self.rate = (sample.messages - self.last.messages) / (sample.at - self.last.at)
        self.first = self.first or sample
        self.last = sample
        return notices

    def line(self) -> str:
        s = self.last
        if s is None:
            return "starting"
        dq = "-" if s.dataqual is None else f"{s.dataqual:.2f}"
        rejected = sum(s.rejected.values())
        return (f"connections {s.subscribed}/{s.connections} subscribed | {self.rate:,.0f} msg/s | "
                f"{s.closed_bars:,} bars stored | {s.gaps} gaps | DataQual {dq}"
                + (f" | {rejected:,} rejected" if rejected else ""))

    def finish(self) -> list[tuple[int, str]]:
        """Notices still owed at shutdown (a burst of rejects that had not ended)."""
        if self.last is None:
            return []
        return [n for reason in list(self.bursts) for n in self._end_burst(reason, self.last, "until exit")]

    def _route(self, sample: Sample) -> list[tuple[int, str]]:
        if sample.subscribed:
            self.failures, self.route_reported = 0, False
            return []
        out = []
        for conn_id, from_state, to_state, reason in sample.transitions:
            if from_state != "CONNECTING" or to_state not in _OPEN_FAILED:
                continue
            self.failures += 1
            if self.failures >= NO_ROUTE_FAILURES and not self.route_reported:
                self.route_reported = True
                out.append((logging.ERROR, (
                    f"cannot reach the exchange at {self.url} ({conn_id}: {_cause(reason)}); check the network "
                    "and DNS, a proxy or firewall (HTTPS_PROXY), and websocket.base_url / --ws-url; to try "
                    "klinestore without the exchange, run it with --sim. Still retrying with backoff.")))
        return out

    def _rejects(self, sample: Sample) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        before = self.last.rejected if self.last is not None else {}
        for reason, count in sample.rejected.items():
            grew = count - before.get(reason, 0)
            burst = self.bursts.get(reason)
            if grew <= 0:
                if burst is not None:
                    out.extend(self._end_burst(reason, sample))
                continue
            if burst is None:
                burst = self.bursts[reason] = _Burst(before.get(reason, 0), self.last.at if self.last else sample.at)
            so_far = count - burst.start_count
            if not burst.reported and so_far >= BURST:
                burst.reported = True
                out.append((logging.WARNING, f"{so_far:,} updates rejected as {reason} in "
                                             f"{sample.at - burst.started_at:.0f} s: {CAUSES.get(reason, reason)}; "
                                             "they are counted in status.json counters.rejected"))
        return out

    def _end_burst(self, reason: str, sample: Sample, end: str = "then stopped") -> list[tuple[int, str]]:
        burst = self.bursts.pop(reason)
        if not burst.reported:
            return []
        total = sample.rejected.get(reason, 0) - burst.start_count
        return [(logging.INFO, f"{total:,} updates rejected as {reason} in {sample.at - burst.started_at:.0f} s, {end}")]


def _cause(reason: str) -> str:
    return reason.split(": ", 1)[1] if reason.startswith("retry ") and ": " in reason else reason


class LiveLine(logging.Filter):
    """One status line redrawn in place on a terminal; a log record first clears it (the filter
    sits on the log handlers), and the next tick draws it again under the record."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream
        self.shown = False

    def draw(self, text: str) -> None:
        width = _width() - 1
        self.stream.write("\r\x1b[K" + text[:width])
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

    def filter(self, record: logging.LogRecord) -> bool:
        self.clear()
        return True


def _width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 20)).columns


class Progress:
    """Samples the service every ``tick`` seconds: logs the notices, shows the line (see the module docstring)."""

    def __init__(self, sample: Callable[[], Sample], url: str, *, every: float = 60.0, tick: float = 1.0,
                 stream: IO[str] | None = None) -> None:
        self.sample, self.watch = sample, Watch(url)
        self.every, self.tick = every, tick
        self.stream = stream if stream is not None else sys.stderr
        quiet = not logging.getLogger().isEnabledFor(logging.INFO)  # klinestore -q: no live line either
        self.live = LiveLine(self.stream) if self.stream.isatty() and not quiet else None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.live is not None:
            for handler in logging.getLogger().handlers:
                handler.addFilter(self.live)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._step()
        for level, message in self.watch.finish():
            log.log(level, message)
        if self.live is not None:
            self.live.clear()
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self.live)

    async def _run(self) -> None:
        next_line = time.monotonic() + self.every
        while True:
            await asyncio.sleep(self.tick)
            self._step()
            if self.live is not None:
                self.live.draw(self.watch.line())
            elif time.monotonic() >= next_line:
                next_line += self.every
                log.info("progress: %s", self.watch.line())

    def _step(self) -> None:
        try:
            sample = self.sample()
        except Exception:  # noqa: BLE001 - progress must never stop the service
            log.debug("progress sample failed", exc_info=True)
            return
        for level, message in self.watch.observe(sample):
            log.log(level, message)


def service_sample(service: Any) -> Callable[[], Sample]:
    """A sampler of a running ``klinestore.service.Service`` (new transitions since the last call)."""
    seen = [service.feed.events.total]

    def sample() -> Sample:
        feed = service.feed
        new = feed.events.since(seen[0])
        seen[0] = feed.events.total
        conns = feed.pool.status()
        scores = [s["score"] for s in service.quality.monitor.status().values() if s.get("score") is not None]
        return Sample(
            at=time.monotonic(), connections=len(conns),
            subscribed=sum(1 for c in conns if c["state"] == "SUBSCRIBED"),
            messages=feed.dispatcher.messages, closed_bars=feed.dispatcher.closed, gaps=feed.gaps_reported,
            rejected=dict(feed.state.rejected), dataqual=min(scores) if scores else None,
            transitions=[(e.conn_id, e.from_state, e.to_state, e.reason) for e in new],
        )

    return sample
