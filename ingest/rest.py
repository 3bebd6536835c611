"""The REST client: weight-aware, polite under 429, never the cause of a 418.

httpx (async HTTP/1.1 with TLS and timeouts) does the transport; its ``transport`` argument
is the seam tests use to replace the network. Everything else is ours:

* each request's weight is reserved in the :class:`~klinestore.ingest.budget.WeightBudget` before it is
  sent, and waits for the next exchange minute rather than exceed the budget; while a request
  of a more urgent :class:`~klinestore.ingest.budget.Priority` waits, less urgent ones wait
  behind it (a book out of sync is served before a periodic check);
* a 429 pauses *all* requests for ``Retry-After`` seconds, then the request is retried;
* a 418 (banned) pauses all requests too and raises :class:`~klinestore.ingest.errors.Banned`, never retried;
* 5xx, 408 and transport errors are retried with backoff, up to ``rest.max_retries``;
* every request sent is recorded in the :class:`~klinestore.ingest.ledger.ApiLedger`;
* httpx's exceptions become :class:`~klinestore.ingest.errors.RestError` here, at the boundary.

In WebSocket-only mode the client is built with ``allow_klines=False`` and refuses REST
klines outright: the guarantee does not depend on every caller remembering the mode.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from klinestore.ingest.backoff import Backoff, BackoffPolicy
from klinestore.ingest.budget import MINUTE_MS, Priority, WeightBudget
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.config import RestConfig
from klinestore.ingest.errors import Banned, RateLimited, RestError
from klinestore.ingest.ledger import ApiLedger
from klinestore.ingest.protocol.rest import (
    DEPTH_PATH,
    EXCHANGE_INFO_PATH,
    FUNDING_RATE_PATH,
    INDEX_KLINES_PATH,
    KLINES_MAX_LIMIT,
    KLINES_PATH,
    MARK_KLINES_PATH,
    TIME_PATH,
    USED_WEIGHT_HEADER,
    DepthSnapshot,
    ExchangeInfo,
    FundingRate,
    RestKline,
    decode_api_error,
    decode_depth_snapshot,
    decode_exchange_info,
    decode_funding_rates,
    decode_klines,
    decode_server_time,
    path_weight,
)

log = logging.getLogger(__name__)

#: Pause after a 418 without a Retry-After header (Binance bans for 2 minutes to 3 days).
DEFAULT_BAN_S = 120.0
#: Pause after a 429 without a Retry-After header.
DEFAULT_RETRY_AFTER_S = 60.0
#: The longest pause a Retry-After may ask for: the exchange's longest ban (3 days).
MAX_PAUSE_S = 3 * 86_400.0
#: Requests in flight at once.
MAX_IN_FLIGHT = 4
_RETRYABLE_STATUS = frozenset({408, 500, 502, 503, 504})


class RestClient:
    """Binance USD-M futures REST (``/fapi/v1/...``), the public market-data endpoints."""

    def __init__(
        self,
        base_url: str,
        config: RestConfig,
        clock: ExchangeClock,
        *,
        ledger: ApiLedger | None = None,
        allow_klines: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.ledger = ledger or ApiLedger()
        self.allow_klines = allow_klines
        self.budget = WeightBudget(config.weight_limit, config.weight_margin)
        self.paused_until = 0.0  # monotonic; set by 429/418
        self.rate_limited = 0
        self.banned = 0
        self.retries = 0
        self.budget_wait_s = 0.0  # real seconds requests spent waiting for the weight budget
        self._policy = BackoffPolicy(base=config.retry_base_delay, cap=config.retry_max_delay, jitter=0.1,
                                     max_retries=config.max_retries)
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._waiting: Counter[int] = Counter()  # priority -> requests waiting for their turn
        self._turn_changed = asyncio.Event()  # replaced each time a waiter leaves
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), transport=transport, timeout=config.timeout,
            headers={"User-Agent": "klinestore"}, follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- endpoints ----------------------------------------------------------------------------

    async def server_time(self) -> int:
        """``/fapi/v1/time``; also syncs the exchange clock (half the round trip is the delay)."""
        started = time.monotonic()
        body = await self.get(TIME_PATH)
        server_ms = decode_server_time(body)
        self.clock.sync(server_ms, time.monotonic() - started)
        return server_ms

    async def exchange_info(self) -> ExchangeInfo:
        return decode_exchange_info(await self.get(EXCHANGE_INFO_PATH))

    async def depth(
        self, symbol: str, limit: int = 1000, *, priority: Priority = Priority.NORMAL,
        on_turn: Callable[[], None] | None = None,
    ) -> DepthSnapshot:
        """A depth snapshot; ``on_turn`` runs when the request has its weight and is about to go."""
        params = {"symbol": symbol, "limit": limit}
        return decode_depth_snapshot(await self.get(DEPTH_PATH, params, priority=priority, on_turn=on_turn))

    async def klines(
        self, symbol: str, interval: str, *, start_ms: int | None = None, end_ms: int | None = None,
        limit: int = KLINES_MAX_LIMIT, priority: Priority = Priority.NORMAL,
    ) -> list[RestKline]:
        """REST klines (fallback mode only): refused with :class:`RestError` in WebSocket-only mode."""
        if not self.allow_klines:
            raise RestError(
                "REST klines are disabled in websocket_only mode (set modes.websocket_only_klines and "
                "modes.disable_rest_fallback to false for the fallback mode)", endpoint=KLINES_PATH,
            )
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        return decode_klines(await self.get(KLINES_PATH, params, priority=priority))

    async def funding_rates(
        self, symbol: str, *, start_ms: int | None = None, end_ms: int | None = None, limit: int = 1000,
        priority: Priority = Priority.NORMAL,
    ) -> list[FundingRate]:
        """``/fapi/v1/fundingRate`` of one symbol, oldest first (from ``start_ms``: the first ``limit``)."""
        params: dict[str, Any] = {"symbol": symbol, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        return decode_funding_rates(await self.get(FUNDING_RATE_PATH, params, priority=priority))

    async def price_klines(
        self, kind: str, symbol: str, interval: str, *, start_ms: int | None = None, end_ms: int | None = None,
        limit: int = KLINES_MAX_LIMIT, priority: Priority = Priority.NORMAL,
    ) -> list[RestKline]:
        """Mark (``kind="mark"``) or index klines; like :meth:`klines`, refused in WebSocket-only mode."""
        path = MARK_KLINES_PATH if kind == "mark" else INDEX_KLINES_PATH
        if not self.allow_klines:
            raise RestError("REST klines are disabled in websocket_only mode", endpoint=path)
        params: dict[str, Any] = {"symbol" if kind == "mark" else "pair": symbol, "interval": interval, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        return decode_klines(await self.get(path, params, priority=priority))

    # --- the core -------------------------------------------------------------------------------

    async def get(
        self, path: str, params: dict[str, Any] | None = None, *, priority: Priority = Priority.NORMAL,
        on_turn: Callable[[], None] | None = None,
    ) -> bytes:
        """GET ``path``: budgeted by priority, retried, recorded; the body of a 200, else :class:`RestError`."""
        weight = path_weight(path, {k: str(v) for k, v in (params or {}).items()})
        backoff = Backoff(self._policy)
        while True:
            try:
                return await self._attempt(path, params, weight, priority, on_turn)
            except Banned:
                raise
            except RateLimited:
                if backoff.next_delay() is None:
                    raise
                self.retries += 1  # the pause is waited out before the next attempt
                continue
            except RestError as exc:
                if not retryable(exc):
                    raise
                delay = backoff.next_delay()
                if delay is None:
                    raise
                self.retries += 1
                log.info("GET %s failed (%s); retry %d in %.2fs", path, exc, backoff.attempts, delay)
                await asyncio.sleep(delay)

    async def _attempt(
        self, path: str, params: dict[str, Any] | None, weight: int, priority: Priority,
        on_turn: Callable[[], None] | None,
    ) -> bytes:
        await self._wait_for_turn(weight, priority)
        if on_turn is not None:
            on_turn()
        async with self._in_flight:
            now = self.clock.now_ms() or 0
            minute = now - now % MINUTE_MS
            try:
                response = await self._http.get(path, params=params)
            except httpx.TimeoutException as exc:
                self.ledger.record(path, weight, minute, 0)
                raise RestError(f"GET {path}: timed out ({type(exc).__name__})", endpoint=path) from None
            except httpx.HTTPError as exc:
                self.ledger.record(path, weight, minute, 0)
                raise RestError(f"GET {path}: {type(exc).__name__}: {exc}", endpoint=path) from None
        status = response.status_code
        self.ledger.record(path, weight, minute, status)
        used = response.headers.get(USED_WEIGHT_HEADER)
        if used is not None and used.isdigit():
            self.budget.observe(int(used), minute)
        if status == 200:
            return response.content
        if status == 429:
            retry_after = _seconds(response.headers.get("Retry-After"), DEFAULT_RETRY_AFTER_S)
            self.rate_limited += 1
            self._pause(retry_after)
            log.warning("GET %s: 429 rate limited; all requests pause %.1fs", path, retry_after)
            raise RateLimited(f"GET {path}: 429 rate limited", retry_after=retry_after, endpoint=path)
        if status == 418:
            retry_after = _seconds(response.headers.get("Retry-After"), DEFAULT_BAN_S)
            self.banned += 1
            self._pause(retry_after)
            log.error("GET %s: 418 IP banned; all requests pause %.0fs", path, retry_after)
            raise Banned(f"GET {path}: 418 IP banned for {retry_after:.0f}s", status=418, endpoint=path)
        api = decode_api_error(response.content)
        detail = f" {api.code}: {api.msg}" if api else ""
        raise RestError(f"GET {path}: HTTP {status}{detail}", status=status, endpoint=path)

    async def _wait_for_turn(self, weight: int, priority: Priority = Priority.NORMAL) -> None:
        self._waiting[priority] += 1
        try:
            while True:
                pause = self.paused_until - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                    continue
                if any(self._waiting[p] for p in range(priority)):
                    await self._turn_changed.wait()  # a more urgent request is waiting: after it
                    continue
                now = self.clock.now_ms()
                if now is None:
                    return  # the first call (server time) runs before the clock knows the minute
                wait_ms = self.budget.reserve(weight, now)
                if wait_ms == 0:
                    return
                wait_s = max(0.001, self.clock.seconds_until(now + wait_ms + 1))
                self.budget_wait_s += wait_s
                await asyncio.sleep(wait_s)
        finally:
            self._waiting[priority] -= 1
            changed, self._turn_changed = self._turn_changed, asyncio.Event()
            changed.set()

    def _pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    def status(self) -> dict[str, object]:
        now = self.clock.now_ms()
        return {
            "weight_used": self.budget.used, "weight_usable": self.budget.usable,
            "weight_remaining": self.budget.remaining(now) if now is not None else self.budget.usable,
            "budget_waits": self.budget.waits, "rate_limited": self.rate_limited, "banned": self.banned,
            "retries": self.retries, "paused_s": round(max(0.0, self.paused_until - time.monotonic()), 3),
        }


def retryable(exc: RestError) -> bool:
    """Whether repeating the same request may succeed: transport errors, timeouts, 408 and 5xx."""
    return exc.status == 0 or exc.status in _RETRYABLE_STATUS


def _seconds(header: str | None, default: float) -> float:
    """A ``Retry-After`` in seconds: ``default`` when absent or not a number, at most ``MAX_PAUSE_S``.

    Bounded because it pauses every request: an ``inf`` or ``1e308`` from a broken proxy would
    otherwise stop depth snapshots, back-fills and listings for good.
    """
    try:
        value = float(header) if header is not None else default
    except ValueError:
        return default
    return min(value, MAX_PAUSE_S) if math.isfinite(value) and value >= 0 else default
