"""Routed URLs and the grouping of streams into connections."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from klinestore.ingest.protocol.errors import PlanError
from klinestore.ingest.protocol.streams import Route, parse_stream

#: The exchange refuses the 1025th stream on a connection (code 4, close 1008).
EXCHANGE_MAX_STREAMS = 1024

DEFAULT_ROUTES: Mapping[Route, str] = {Route.MARKET: "/market", Route.PUBLIC: "/public"}


def stream_url(
    base_url: str,
    route_path: str,
    streams: Iterable[str] = (),
    *,
    combined: bool = True,
) -> str:
    """``<base><route>/stream?streams=a/b`` (combined) or ``<base><route>/ws/<stream>`` (single).

    A combined URL without streams is valid: streams are then added with SUBSCRIBE.
    """
    base = base_url.rstrip("/")
    names = list(streams)
    if combined:
        return f"{base}{route_path}/stream" + (f"?streams={'/'.join(names)}" if names else "")
    if len(names) != 1:
        raise PlanError(f"a single-stream URL takes exactly one stream, got {len(names)}")
    return f"{base}{route_path}/ws/{names[0]}"


@dataclass(frozen=True, slots=True)
class ConnectionPlan:
    """Streams one connection carries, all on one route."""

    route: Route
    streams: tuple[str, ...]


def plan_connections(
    streams: Iterable[str],
    max_per_connection: int,
    max_connections: int | None = None,
) -> list[ConnectionPlan]:
    """Split streams by route, then into balanced groups of about ``max_per_connection``.

    ``max_per_connection`` is a preference: when ``max_connections`` (None: no bound) cannot
    hold the streams at that size, connections carry more, up to the exchange's 1024, taking
    from the route whose connections grow least. Groups of one route are filled evenly (not
    200 + 200 + 3) so that the least-loaded rule keeps working as streams are added. Raises
    :class:`PlanError` only when even 1024 per connection cannot fit ``max_connections``.
    """
    prefer = min(max_per_connection, EXCHANGE_MAX_STREAMS)
    if prefer < 1:
        raise PlanError("max_per_connection must be >= 1")
    by_route: dict[Route, list[str]] = {}
    for name in dict.fromkeys(streams):
        by_route.setdefault(parse_stream(name).route, []).append(name)
    counts = {route: -(-len(names) // prefer) for route, names in by_route.items()}
    if max_connections is not None:
        floors = {route: -(-len(names) // EXCHANGE_MAX_STREAMS) for route, names in by_route.items()}
        if sum(floors.values()) > max_connections:
            total = sum(len(names) for names in by_route.values())
            raise PlanError(
                f"{total} streams need at least {sum(floors.values())} connections even at the exchange's "
                f"{EXCHANGE_MAX_STREAMS} streams per connection (split by route), but "
                f"websocket.connection_pool.max_connections is {max_connections}; raise it, or leave it "
                f"unset (null) and the pool opens the connections the streams need"
            )
        while sum(counts.values()) > max_connections:
            shrinkable = [r for r in counts if counts[r] > floors[r]]
            route = min(shrinkable, key=lambda r: (len(by_route[r]) / (counts[r] - 1), r))
            counts[route] -= 1
    plans: list[ConnectionPlan] = []
    for route in sorted(by_route):
        names = by_route[route]
        size, extra = divmod(len(names), counts[route])
        start = 0
        for i in range(counts[route]):
            end = start + size + (1 if i < extra else 0)
            plans.append(ConnectionPlan(route, tuple(names[start:end])))
            start = end
    return plans
