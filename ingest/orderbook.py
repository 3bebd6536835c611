"""A local order book kept by Binance's documented algorithm, as a pure state machine.

BINANCE.md, "Keeping a local order book": buffer the diff-depth events, fetch a REST
snapshot, drop events with ``u < lastUpdateId``, apply first the event with
``U <= lastUpdateId <= u``, then require each event's ``pu`` to be the previous ``u``;
on a break, start again from a new snapshot. Quantities are absolute; 0 removes a level.

No sockets and no clocks here: the caller feeds events and snapshots and asks
``needs_snapshot``; the asyncio side (``klinestore.ingest.depthsync``) fetches snapshots.

Memory is bounded: until ``fetching()`` says the snapshot request is about to go, only the
newest ``QUEUED_BUFFERED`` events, and of those no more than ``QUEUED_LEVELS`` price levels
(always the newest event), are kept (older ones would fall below the snapshot's
``lastUpdateId`` and be dropped anyway); each side keeps the ``max_levels`` best prices (the
snapshot's depth: past it the book never knew every level), trimmed with some slack.

States: ``buffering`` (waiting for a snapshot), ``bridging`` (snapshot applied, waiting for
the event that spans it), ``synced``. A synced book whose price walked toward its snapshot's
edge sets ``refresh_wanted``; ``begin_refresh`` (when the request goes) starts it over. Events already applied (``u`` not beyond the book's)
are duplicates, harmless during a connection's rotation overlap, and skipped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from klinestore.ingest.protocol.events import DepthUpdateEvent, Level
from klinestore.ingest.protocol.rest import DepthSnapshot

BUFFERING = "buffering"
BRIDGING = "bridging"
SYNCED = "synced"

#: Events buffered while a snapshot request is out (at 100 ms updates: 100 s of them).
MAX_BUFFERED = 1000
#: Events kept while a book only waits for its turn at the weight budget (maybe a minute):
#: the snapshot, taken later, makes every older one useless, so only the newest few are kept.
QUEUED_BUFFERED = 8
#: ... and at most this many price levels among them (the newest event is always kept). A diff
#: can carry thousands of levels: at 1000 symbols, 8 whole events for each of the books waiting
#: for the weight budget (minutes, at start-up) held about 800 MB (issue 12).
QUEUED_LEVELS = 400
#: A side may hold this share of levels past its bound before the worst are trimmed.
TRIM_SLACK = 0.25
#: Resyncs remembered with their details (``OrderBook.recent_resyncs``).
RECENT_RESYNCS = 16


@dataclass(frozen=True, slots=True)
class Resync:
    """Why a synced book started over: what DataQual and the reconciliations table report.

    ``ordinal`` is the book's ``resyncs`` count after it, so a reader can tell new ones from
    ones it has seen. A chain break (``cause`` "pu_chain") has the book at ``book_id`` and an
    event claiming ``event_pu`` as its predecessor; a requested one ("requested", a check
    that found the book drifted) has ``event_pu`` -1.
    """

    ordinal: int
    event_ms: int
    book_id: int
    event_pu: int
    cause: str


class _Side:
    """One side of the book: price → quantity, with the best price cached.

    A snapshot of ``keep`` levels (the REST ``limit``) shows the book only down to its worst
    price, the ``edge``: a level past it that no update has touched may exist unseen. So the
    side serves only levels inside the edge, counts them (``known``, kept up to date per
    update), and is ``short`` once fewer than half of ``keep`` remain (the price walked toward
    the edge): the book then asks for a new snapshot instead of serving a hole near the top.
    """

    __slots__ = ("levels", "_best", "_high", "_keep", "_trim_at", "edge", "known")

    def __init__(self, high: bool, keep: int | None = None) -> None:
        self.levels: dict[float, float] = {}
        self._best: float | None = None
        self._high = high  # bids: the best is the highest price
        self._keep = keep
        self._trim_at = None if keep is None else keep + max(1, int(keep * TRIM_SLACK))
        self.edge: float | None = None  # worst price the last snapshot showed, when it was cut at ``keep``
        self.known = 0  # levels inside the edge

    def inside(self, price: float) -> bool:
        edge = self.edge
        return edge is None or (price >= edge if self._high else price <= edge)

    def apply(self, updates: list[Level]) -> None:
        levels = self.levels
        best = self._best
        high = self._high
        edge = self.edge
        known = self.known
        for price, qty in updates:
            inside = edge is None or (price >= edge if high else price <= edge)
            if qty == 0.0:
                if levels.pop(price, None) is not None:
                    known -= inside
                    if price == best:
                        best = None
            else:
                if inside and price not in levels:
                    known += 1
                levels[price] = qty
                if best is not None and (price > best if high else price < best):
                    best = price
        self._best = best
        self.known = known
        if self._trim_at is not None and len(levels) > self._trim_at:
            kept = self._sorted()[: self._keep or 0]
            self.levels = {p: levels[p] for p in kept}
            if kept:  # what lies past the worst kept price is forgotten: it is unknown from now on
                self.edge = kept[-1] if edge is None else (max(edge, kept[-1]) if high else min(edge, kept[-1]))
            self.known = sum(1 for p in self.levels if self.inside(p))

    def reset(self, levels: list[Level]) -> None:
        self.levels = {p: q for p, q in levels if q != 0.0}
        self._best = None
        cut = self._keep is not None and len(self.levels) >= self._keep
        self.edge = (min(self.levels) if self._high else max(self.levels)) if cut else None
        self.known = len(self.levels)

    @property
    def short(self) -> bool:
        """Fewer than half the snapshot's levels are still known: a new snapshot is due."""
        return self.edge is not None and self._keep is not None and self.known < self._keep // 2

    def best(self) -> tuple[float, float] | None:
        if not self.levels:
            return None
        if self._best is None:
            self._best = max(self.levels) if self._high else min(self.levels)
        return self._best, self.levels[self._best]

    def top(self, n: int) -> list[tuple[float, float]]:
        """The best ``n`` levels inside the edge."""
        return [(p, self.levels[p]) for p in self._sorted() if self.inside(p)][:n]

    def _sorted(self) -> list[float]:
        return sorted(self.levels, reverse=self._high)


class OrderBook:
    """The book of one symbol."""

    __slots__ = (
        "symbol", "state", "last_update_id", "event_time", "resyncs", "snapshots", "duplicates",
        "dropped", "stale_snapshots", "overflows", "bids", "asks", "_buffer", "_snapshot_wanted",
        "recent_resyncs", "_fetching", "refreshes", "refresh_wanted",
    )

    def __init__(self, symbol: str, max_buffered: int = MAX_BUFFERED, max_levels: int | None = None) -> None:
        self.symbol = symbol
        self.state = BUFFERING
        self.last_update_id = 0
        self.event_time = 0
        self.resyncs = 0  # chain breaks that forced a new snapshot
        self.snapshots = 0  # snapshots applied
        self.duplicates = 0
        self.dropped = 0  # buffered events older than the snapshot
        self.stale_snapshots = 0  # snapshots older than the first buffered event
        self.overflows = 0  # buffered events lost to the buffer's bound
        self.bids = _Side(high=True, keep=max_levels)
        self.asks = _Side(high=False, keep=max_levels)
        self._buffer: deque[DepthUpdateEvent] = deque(maxlen=max_buffered)
        self._snapshot_wanted = True
        self._fetching = False  # a snapshot request is out: buffer up to max_buffered
        self.refreshes = 0  # new snapshots because the price walked to the last one's edge
        self.refresh_wanted = False  # it did: a new snapshot is due when the REST budget allows
        self.recent_resyncs: deque[Resync] = deque(maxlen=RECENT_RESYNCS)

    # --- input --------------------------------------------------------------------------------

    def on_event(self, ev: DepthUpdateEvent) -> None:
        if self.state == SYNCED:
            if ev.u <= self.last_update_id:
                self.duplicates += 1
            elif ev.pu == self.last_update_id:
                self._apply(ev)
            else:
                self._resync(ev)
            return
        if self.state == BRIDGING:
            self._bridge(ev)
            return
        if not self._fetching:
            self._buffer.append(ev)
            self._trim_queued()  # older than any snapshot still to be taken: useless
            return
        if len(self._buffer) == self._buffer.maxlen:
            self.overflows += 1
        self._buffer.append(ev)

    def fetching(self, out: bool = True) -> None:
        """The snapshot request goes now (``out``): keep every event until it is applied; or it failed,
        and the book waits for its turn again with its newest few events."""
        self._fetching = out and self.state == BUFFERING
        if not self._fetching:
            self._trim_queued()

    def _trim_queued(self) -> None:
        """Keep the newest ``QUEUED_BUFFERED`` events holding at most ``QUEUED_LEVELS`` levels (at least one)."""
        buffer = self._buffer
        while len(buffer) > QUEUED_BUFFERED:
            buffer.popleft()
        levels = sum(len(e.b) + len(e.a) for e in buffer)
        while len(buffer) > 1 and levels > QUEUED_LEVELS:
            old = buffer.popleft()
            levels -= len(old.b) + len(old.a)

    def begin_refresh(self) -> None:
        """The refresh snapshot's request goes now: from here the book buffers until it is applied
        (blind for one round trip, instead of serving a hole where the old snapshot ended)."""
        if self.state == SYNCED and self.refresh_wanted:
            self.request_snapshot("window")
        self.fetching()

    def on_snapshot(self, snap: DepthSnapshot) -> bool:
        """Apply a REST snapshot; False (and still wanting one) if it cannot bridge the buffer."""
        if self.state != BUFFERING:
            return False
        buffered = list(self._buffer)
        self._buffer.clear()
        self._fetching = False
        self.bids.reset(snap.bids)
        self.asks.reset(snap.asks)
        self.last_update_id = snap.lastUpdateId
        self.event_time = snap.E
        self.snapshots += 1
        self._snapshot_wanted = False
        self.state = BRIDGING
        for ev in buffered:
            self.on_event(ev)
        return self.state != BUFFERING

    # --- output ---------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self.state == SYNCED

    @property
    def needs_snapshot(self) -> bool:
        """True when a snapshot should be fetched now (the stream has delivered something)."""
        return self.state == BUFFERING and self._snapshot_wanted and bool(self._buffer)

    def best_bid(self) -> tuple[float, float] | None:
        """(price, quantity) of the best bid, or None when not synced or empty."""
        return self.bids.best() if self.state == SYNCED else None

    def best_ask(self) -> tuple[float, float] | None:
        return self.asks.best() if self.state == SYNCED else None

    def depth(self, n: int = 20) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The best ``n`` levels per side, bids high to low and asks low to high (empty unless synced)."""
        if self.state != SYNCED:
            return [], []
        return self.bids.top(n), self.asks.top(n)

    def status(self) -> dict[str, object]:
        bid, ask = self.best_bid(), self.best_ask()
        return {
            "state": self.state, "last_update_id": self.last_update_id, "resyncs": self.resyncs,
            "snapshots": self.snapshots, "stale_snapshots": self.stale_snapshots, "duplicates": self.duplicates,
            "overflows": self.overflows, "buffered": len(self._buffer),
            "best_bid": bid[0] if bid else None, "best_ask": ask[0] if ask else None,
            "levels": [len(self.bids.levels), len(self.asks.levels)],
            "known_levels": [self.bids.known, self.asks.known], "refreshes": self.refreshes,
        }

    # --- internals ------------------------------------------------------------------------------

    def _apply(self, ev: DepthUpdateEvent) -> None:
        self.bids.apply(ev.b)
        self.asks.apply(ev.a)
        self.last_update_id = ev.u
        self.event_time = ev.E
        if not self.refresh_wanted and (self.bids.short or self.asks.short):
            self.refresh_wanted = True  # the price walked toward the snapshot's edge: serve what is known till then

    def _bridge(self, ev: DepthUpdateEvent) -> None:
        if ev.u < self.last_update_id:
            self.dropped += 1
        elif ev.U <= self.last_update_id <= ev.u or ev.pu == self.last_update_id:
            self.state = SYNCED
            self._apply(ev)
        else:  # the snapshot is older than the events we hold: the ones between are lost
            self.stale_snapshots += 1
            self._restart(ev)

    def _resync(self, ev: DepthUpdateEvent) -> None:
        """The chain broke: forget the book, keep buffering from ``ev``, ask for a snapshot."""
        self.resyncs += 1
        self.recent_resyncs.append(Resync(self.resyncs, ev.E, self.last_update_id, ev.pu, "pu_chain"))
        self._restart(ev)

    def _restart(self, ev: DepthUpdateEvent) -> None:
        self.state = BUFFERING
        self._fetching = False
        self.bids.reset([])
        self.asks.reset([])
        self._buffer.clear()
        self._buffer.append(ev)
        self._snapshot_wanted = True
        self.refresh_wanted = False

    def request_snapshot(self, reason: str = "requested") -> None:
        """Ask for a new snapshot (a failed fetch, a check that found the book drifted, or a
        price that walked to the edge of what the last snapshot showed: ``reason`` "window")."""
        if self.state != BUFFERING:
            if reason == "window":  # routine upkeep of a bounded book, not a fault: no resync counted
                self.refreshes += 1
            else:
                self.resyncs += 1
                self.recent_resyncs.append(Resync(self.resyncs, self.event_time, self.last_update_id, -1, reason))
            self.state = BUFFERING
            self.bids.reset([])
            self.asks.reset([])
            self._buffer.clear()
        self._fetching = False
        self._snapshot_wanted = True
        self.refresh_wanted = False
