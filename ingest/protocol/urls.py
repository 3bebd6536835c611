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
    """Split streams by route, then into balanced groups of at most ``max_per_connection``.

    Groups of one route are filled evenly (not 200 + 200 + 3) so that the least-loaded rule
    keeps working as streams are added. Raises :class:`PlanError` when the streams cannot
    fit ``max_connections``.
    """
    limit = min(max_per_connection, EXCHANGE_MAX_STREAMS)
    if limit < 1:
        raise PlanError("max_per_connection must be >= 1")
    by_route: dict[Route, list[str]] = {}
    seen: set[str] = set()
    for name in streams:
        if name in seen:
            continue
        seen.add(name)
        by_route.setdefault(parse_stream(name).route, []).append(name)
    plans: list[ConnectionPlan] = []
    for route in sorted(by_route):
        names = by_route[route]
        count = -(-len(names) // limit)
        size = -(-len(names) // count)
        plans.extend(ConnectionPlan(route, tuple(names[i : i + size])) for i in range(0, len(names), size))
    if max_connections is not None and len(plans) > max_connections:
        total = sum(len(p.streams) for p in plans)
        raise PlanError(
            f"{total} streams need {len(plans)} connections at {limit} streams per connection "
            f"(split by route), but websocket.connection_pool.max_connections is {max_connections}; "
            f"raise max_connections or max_streams_per_connection (the exchange allows "
            f"{EXCHANGE_MAX_STREAMS})"
        )
    return plans
