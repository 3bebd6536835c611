"""Which stream rides which connection, sans I/O: a planner that returns ownership changes.

:class:`Placement` holds the pool's truth (each connection's streams, each stream's owner,
each connection's limit) and answers every event with the :class:`Open`, :class:`Assign`,
:class:`Release` and :class:`Retire` changes the pool (:mod:`~klinestore.ingest.pool`) carries
out on real connections. It opens nothing itself, so placement, refusals and rotation are
tested without sockets.

* **Sizing**: start-up streams are planned with ``plan_connections`` (split by route,
  balanced, about ``prefer`` each; more, up to the exchange's 1024, only where
  ``max_connections`` binds). Later streams go to the route's least-loaded connection under
  ``prefer``, else to a new connection while ``max_connections`` (None: no bound) allows, else
  past the preference up to each connection's limit; only then are they ``unplaced``.
* **Refusals**: "too many subscriptions" lowers that connection's limit to what it holds and
  places the refused streams again; any other refusal is recorded per stream and not retried.
* **Rotation**: ``begin_rotation`` plans a replacement with the old connection's streams; the
  streams stay the old one's until ``complete_rotation``, which hands over the old
  connection's streams *as they are then* (a stream removed meanwhile, a delisting, is
  released from the replacement, never re-owned) and retires the old connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from klinestore.ingest.protocol.streams import Route, parse_stream
from klinestore.ingest.protocol.urls import EXCHANGE_MAX_STREAMS, plan_connections


@dataclass(frozen=True, slots=True)
class Open:
    """Open a new connection carrying ``streams``."""

    conn_id: str
    route: Route
    streams: list[str]


@dataclass(frozen=True, slots=True)
class Assign:
    """Subscribe ``streams`` on an existing connection."""

    conn_id: str
    streams: list[str]


@dataclass(frozen=True, slots=True)
class Release:
    """Unsubscribe ``streams`` from a connection."""

    conn_id: str
    streams: list[str]


@dataclass(frozen=True, slots=True)
class Retire:
    """Close a connection for good."""

    conn_id: str
    reason: str


Change = Open | Assign | Release | Retire


class Placement:
    """The pool's ownership map and the rules that change it."""

    def __init__(self, prefer: int, max_connections: int | None = None) -> None:
        self.prefer = min(prefer, EXCHANGE_MAX_STREAMS)
        self.max_connections = max_connections
        self.members: dict[str, dict[str, None]] = {}  # connection id -> its streams, in order
        self.routes: dict[str, Route] = {}
        self.limit: dict[str, int] = {}  # connection id -> streams it may carry
        self.owner: dict[str, str] = {}  # stream -> connection id
        self.refused: dict[str, str] = {}  # stream -> why the exchange refused it
        self.unplaced: list[str] = []
        self.rotations: dict[str, tuple[str, list[str]]] = {}  # replacement id -> (old id, streams it opened with)
        self._next_id = 0

    # --- events ----------------------------------------------------------------------------------

    def start(self, streams: list[str]) -> list[Change]:
        """The start-up connections (raises ``PlanError`` naming the config keys)."""
        changes: list[Change] = []
        for plan in plan_connections(streams, self.prefer, self.max_connections):
            changes.append(self._open(plan.route, list(plan.streams)))
        return changes

    def add(self, streams: list[str]) -> list[Change]:
        """Place streams not yet owned; the changes say where."""
        assigned: dict[str, list[str]] = {}
        fresh: dict[Route, list[str]] = {}
        for s in dict.fromkeys(streams):
            if s in self.owner:
                continue
            route = parse_stream(s).route
            conn = self._least_loaded(route, self.prefer, assigned)
            if conn is not None:
                assigned.setdefault(conn, []).append(s)
            else:
                fresh.setdefault(route, []).append(s)
        opened: list[Change] = []
        for route, names in fresh.items():
            while names and self._may_open(len(opened)):
                opened.append(Open(self._new_id(route), route, names[: self.prefer]))
                names = names[self.prefer :]
            for i, s in enumerate(names):
                conn = self._least_loaded(route, EXCHANGE_MAX_STREAMS, assigned)
                if conn is None:
                    self.unplaced.extend(n for n in names[i:] if n not in self.unplaced)
                    break
                assigned.setdefault(conn, []).append(s)
        changes: list[Change] = []
        for conn, names in assigned.items():
            self._take(conn, names)
            changes.append(Assign(conn, names))
        for change in opened:
            assert isinstance(change, Open)
            self._register(change)
            changes.append(change)
        return changes

    def remove(self, streams: list[str]) -> list[Change]:
        """Release streams; a connection left with none is retired."""
        released: dict[str, list[str]] = {}
        for s in dict.fromkeys(streams):
            if s in self.unplaced:
                self.unplaced.remove(s)
            self.refused.pop(s, None)
            conn = self.owner.pop(s, None)
            if conn is not None:
                del self.members[conn][s]
                released.setdefault(conn, []).append(s)
        changes: list[Change] = []
        for conn, names in released.items():
            changes.append(Release(conn, names))
            if not self.members[conn]:
                changes.append(self._retire(conn, "no streams left"))
        return changes

    def refuse(self, conn: str, streams: list[str], *, too_many: bool, reason: str, holds: int) -> list[Change]:
        """The exchange refused ``streams`` on ``conn`` (which still holds ``holds`` subscribed)."""
        if conn in self.rotations:  # the replacement refused: the old connection still owns them
            old, planned = self.rotations[conn]
            self.rotations[conn] = (old, [s for s in planned if s not in streams])
            return []
        mine = [s for s in streams if self.owner.get(s) == conn]
        for s in mine:
            del self.owner[s]
            self.members[conn].pop(s, None)
        if too_many:
            self.limit[conn] = max(1, holds)
            return self.add(mine)
        for s in mine:
            self.refused[s] = reason
        return []

    def begin_rotation(self, old: str) -> Open:
        """A replacement for ``old`` with its streams; ``old`` owns them until completion."""
        route = self.routes[old]
        streams = list(self.members[old])
        new = self._new_id(route)
        self.rotations[new] = (old, streams)
        return Open(new, route, streams)

    def complete_rotation(self, new: str, reason: str) -> list[Change]:
        """``new`` takes over ``old``'s streams as they are now; ``old`` is retired."""
        old, planned = self.rotations.pop(new)
        if old not in self.members:  # retired while the replacement came up
            return [Retire(new, "rotation obsolete")]
        current = list(self.members[old])
        gone = [s for s in planned if s not in self.members[old]]
        extra = [s for s in current if s not in planned]
        # the replacement takes the old connection's place (and order) in every map
        self.members = {(new if c == old else c): m for c, m in self.members.items()}
        self.routes = {(new if c == old else c): r for c, r in self.routes.items()}
        self.limit = {(new if c == old else c): n for c, n in self.limit.items()}
        for s in current:
            self.owner[s] = new
        changes: list[Change] = []
        if gone:
            changes.append(Release(new, gone))
        if extra:
            changes.append(Assign(new, extra))
        changes.append(Retire(old, reason))
        return changes

    def abandon_rotation(self, new: str, reason: str) -> list[Change]:
        self.rotations.pop(new, None)
        return [Retire(new, reason)]

    # --- views -----------------------------------------------------------------------------------

    def streams(self) -> list[str]:
        return list(self.owner)

    def connections(self) -> list[str]:
        return list(self.members)

    # --- internals -------------------------------------------------------------------------------

    def _new_id(self, route: Route) -> str:
        conn = f"{route.value}-{self._next_id}"
        self._next_id += 1
        return conn

    def _open(self, route: Route, streams: list[str]) -> Open:
        change = Open(self._new_id(route), route, streams)
        self._register(change)
        return change

    def _register(self, change: Open) -> None:
        self.members[change.conn_id] = {}
        self.routes[change.conn_id] = change.route
        self.limit[change.conn_id] = EXCHANGE_MAX_STREAMS  # lowered if the exchange says less (code 4)
        self._take(change.conn_id, change.streams)

    def _take(self, conn: str, streams: list[str]) -> None:
        self.members[conn].update(dict.fromkeys(streams))
        for s in streams:
            self.owner[s] = conn
            if s in self.unplaced:
                self.unplaced.remove(s)

    def _retire(self, conn: str, reason: str) -> Retire:
        for s in self.members.pop(conn):
            self.owner.pop(s, None)
        self.routes.pop(conn, None)
        self.limit.pop(conn, None)
        return Retire(conn, reason)

    def _least_loaded(self, route: Route, cap: int, pending: dict[str, list[str]]) -> str | None:
        """The route's emptiest connection under ``cap`` and its own limit, counting ``pending``."""
        best: tuple[int, str] | None = None
        for conn, members in self.members.items():
            if self.routes[conn] != route:
                continue
            n = len(members) + len(pending.get(conn, ()))
            if n < min(cap, self.limit[conn]) and (best is None or n < best[0]):
                best = (n, conn)
        return None if best is None else best[1]

    def _may_open(self, planned: int) -> bool:
        return self.max_connections is None or len(self.members) + planned < self.max_connections
