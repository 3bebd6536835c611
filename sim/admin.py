"""The simulator's own endpoints, outside Binance's namespace: ``/sim/...``.

``GET /sim/truth``, ``GET /sim/ledger`` and ``POST /sim/faults`` are fixed interfaces
(acceptance checks use them); the rest are helpers for tests and demos. Bad requests get
HTTP 400 with ``{"error": message}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from klinestore.sim.clock import parse_time
from klinestore.sim.errors import SimError
from klinestore.ingest.protocol.http import Request, Response

if TYPE_CHECKING:
    from klinestore.sim.server import Simulator


class AdminApi:
    """Routes ``/sim/*`` requests to the simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._get: dict[str, Callable[[Request], Any]] = {
            "/sim/truth": self._truth,
            "/sim/ledger": lambda _: self.sim.ledger(),
            "/sim/time": lambda _: self.sim.time_info(),
            "/sim/connections": lambda _: self.sim.connections(),
            "/sim/stats": lambda _: self.sim.stats(),
            "/sim/faults": lambda _: self.sim.fault_status(),
            "/sim/book": self._book,
        }
        self._post: dict[str, Callable[[Any], Any]] = {
            "/sim/faults": self.sim.inject,
            "/sim/listings": self._listing,
        }

    async def handle(self, request: Request) -> Response:
        routes = self._get if request.method == "GET" else self._post if request.method == "POST" else {}
        route = routes.get(request.path)
        if route is None:
            known = request.path in self._get or request.path in self._post
            return Response.json(405 if known else 404, {"error": f"no {request.method} {request.path}"})
        try:
            if request.method == "POST":
                try:
                    body = json.loads(request.body or b"null")
                except ValueError as exc:
                    return Response.json(400, {"error": f"body is not JSON: {exc}"})
                return Response.json(200, route(body))
            return Response.json(200, route(request))
        except SimError as exc:
            return Response.json(400, {"error": str(exc)})

    def _truth(self, request: Request) -> list[Any]:
        kind = request.param("kind")
        if kind is None:
            return self.sim.truth(_required(request, "symbol"), _required(request, "interval"))
        return self.sim.truth_of(_required(request, "symbol"), kind, request.param("interval") or "1m")

    def _book(self, request: Request) -> dict[str, Any]:
        raw = request.param("update_id")
        if raw is not None and not raw.isdigit():
            raise SimError(f"update_id must be an integer, got {raw!r}")
        return self.sim.order_book(_required(request, "symbol"), int(raw) if raw is not None else None)

    def _listing(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or set(body) - {"symbol", "action", "at"} or "symbol" not in body:
            raise SimError('expected {"symbol": S, "action": "list"|"delist", "at": ISO time or ms (default now)}')
        action = body.get("action", "list")
        at = body.get("at")
        if isinstance(at, str):
            at = parse_time(at, "at")
        elif at is not None and (isinstance(at, bool) or not isinstance(at, int)):
            raise SimError(f"at must be an ISO time or epoch ms, got {at!r}")
        if action == "list":
            return self.sim.list_symbol(body["symbol"], at)
        if action == "delist":
            return self.sim.delist_symbol(body["symbol"], at)
        raise SimError(f"action must be 'list' or 'delist', got {action!r}")


def _required(request: Request, name: str) -> str:
    value = request.param(name)
    if not value:
        raise SimError(f"missing query parameter {name!r}")
    return value
