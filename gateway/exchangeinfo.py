"""The exchange's ``/fapi/v1/exchangeInfo``, cached: served as the exchange sent it, and read
for the precisions the gateway prints numbers with.

It is fetched through the service's REST client (weight 1, budgeted with the service's own
calls) at start and every ``gateway.exchange_info_refresh`` seconds; a failed refresh keeps
the last good copy (counted), so a blip at the exchange never empties the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec

from klinestore.gateway.klines import Decimals

log = logging.getLogger(__name__)


class _Symbol(msgspec.Struct):
    symbol: str
    pricePrecision: int = 8
    quantityPrecision: int = 8


class _Info(msgspec.Struct):
    symbols: list[_Symbol] = []


_decoder = msgspec.json.Decoder(_Info)


class ExchangeInfoCache:
    """The newest good exchangeInfo body and the decimals of its symbols."""

    def __init__(self, fetch: Callable[[], Awaitable[bytes]]) -> None:
        self._fetch = fetch
        self.body: bytes | None = None
        self.decimals: dict[str, Decimals] = {}
        self.refreshes = 0
        self.failures = 0
        self.last_error = ""

    async def refresh(self) -> None:
        try:
            body = await self._fetch()
            info = _decoder.decode(body)
        except Exception as exc:  # noqa: BLE001 - the REST client's or a bad body: keep the last copy
            self.failures += 1
            self.last_error = repr(exc)
            log.warning("gateway: exchangeInfo refresh failed, keeping the last copy: %r", exc)
            return
        self.body = body
        self.decimals = {s.symbol: Decimals(s.pricePrecision, s.quantityPrecision) for s in info.symbols}
        self.refreshes += 1

    def listed(self, symbol: str) -> bool:
        return symbol in self.decimals
