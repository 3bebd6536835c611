"""REST bodies (klines, depth snapshot, exchangeInfo, time, funding, premium index, aggTrades)
and request weights. Mark and index price klines have the klines' 12 fields (``RestKline``).

Weights are Binance's documented ones (USD-M "Market Data" pages): a path with one weight, a
path whose weight grows with ``limit`` like klines, or one that is heavier without ``symbol``.
"""

from __future__ import annotations

import math
from typing import Annotated

import msgspec

from klinestore.ingest.protocol.errors import ProtocolError
from klinestore.ingest.protocol.events import Count, Id, Level, Ms, Price, Qty

KLINES_PATH = "/fapi/v1/klines"
DEPTH_PATH = "/fapi/v1/depth"
EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
TIME_PATH = "/fapi/v1/time"
PING_PATH = "/fapi/v1/ping"
FUNDING_RATE_PATH = "/fapi/v1/fundingRate"
PREMIUM_INDEX_PATH = "/fapi/v1/premiumIndex"
MARK_KLINES_PATH = "/fapi/v1/markPriceKlines"
INDEX_KLINES_PATH = "/fapi/v1/indexPriceKlines"
AGG_TRADES_PATH = "/fapi/v1/aggTrades"
TICKER_24HR_PATH = "/fapi/v1/ticker/24hr"
TICKER_PRICE_PATH = "/fapi/v1/ticker/price"
TICKER_PRICE_V2_PATH = "/fapi/v2/ticker/price"  # the same body; ccxt's fetch_last_prices calls it
BOOK_TICKER_PATH = "/fapi/v1/ticker/bookTicker"
OPEN_INTEREST_PATH = "/fapi/v1/openInterest"

FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT = 100, 1000
AGG_TRADES_DEFAULT_LIMIT, AGG_TRADES_MAX_LIMIT = 500, 1000
#: Weight of a path by whether ``symbol`` was sent: (with, without).
_SYMBOL_WEIGHTS = {
    PREMIUM_INDEX_PATH: (1, 10),
    TICKER_24HR_PATH: (1, 40),
    TICKER_PRICE_PATH: (1, 2),
    TICKER_PRICE_V2_PATH: (1, 2),
    BOOK_TICKER_PATH: (2, 5),
}
_FIXED_WEIGHTS = {AGG_TRADES_PATH: 20, FUNDING_RATE_PATH: 1, OPEN_INTEREST_PATH: 1}

KLINES_MAX_LIMIT = 1500
KLINES_DEFAULT_LIMIT = 500
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
DEPTH_DEFAULT_LIMIT = 500
#: Header carrying the weight used in the current UTC clock minute.
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"


def klines_weight(limit: int = KLINES_DEFAULT_LIMIT) -> int:
    """Weight of ``GET /fapi/v1/klines``: <100 → 1, <500 → 2, ≤1000 → 5, else 10."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def depth_weight(limit: int = DEPTH_DEFAULT_LIMIT) -> int:
    """Weight of ``GET /fapi/v1/depth``: ≤50 → 2, 100 → 5, 500 → 10, 1000 → 20."""
    if limit <= 50:
        return 2
    if limit <= 100:
        return 5
    if limit <= 500:
        return 10
    return 20


def path_weight(path: str, params: dict[str, str] | None = None) -> int:
    """Weight of a request by path and query parameters (unknown paths weigh 1)."""
    params = params or {}
    if path in _SYMBOL_WEIGHTS:
        return _SYMBOL_WEIGHTS[path][0 if params.get("symbol") else 1]
    if path in _FIXED_WEIGHTS:
        return _FIXED_WEIGHTS[path]
    try:
        if path in (KLINES_PATH, MARK_KLINES_PATH, INDEX_KLINES_PATH):
            return klines_weight(int(params.get("limit", KLINES_DEFAULT_LIMIT)))
        if path == DEPTH_PATH:
            return depth_weight(int(params.get("limit", DEPTH_DEFAULT_LIMIT)))
    except ValueError:
        return 1
    return 1


class RestKline(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One row of ``/fapi/v1/klines`` (and of the archive CSVs): 12 fields."""

    open_time: Ms
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Qty
    close_time: Ms
    quote_volume: Qty
    trades: Count
    taker_buy_volume: Qty
    taker_buy_quote_volume: Qty
    ignore: str = "0"


class DepthSnapshot(msgspec.Struct, frozen=True, gc=False):
    lastUpdateId: Id
    bids: list[Level]
    asks: list[Level]
    E: Ms = 0
    T: Ms = 0


class RateLimit(msgspec.Struct, frozen=True):
    rateLimitType: str
    interval: str
    intervalNum: int
    limit: int


class SymbolInfo(msgspec.Struct, frozen=True):
    symbol: str
    status: str
    pair: str = ""
    contractType: str = ""
    onboardDate: int = 0
    deliveryDate: int = 0
    baseAsset: str = ""
    quoteAsset: str = ""


class ExchangeInfo(msgspec.Struct, frozen=True):
    serverTime: Ms
    symbols: list[SymbolInfo]
    rateLimits: list[RateLimit] = []
    timezone: str = "UTC"

    def request_weight_limit(self) -> int | None:
        for limit in self.rateLimits:
            if limit.rateLimitType == "REQUEST_WEIGHT" and limit.interval == "MINUTE" and limit.intervalNum == 1:
                return limit.limit
        return None


#: A funding or interest rate: signed, as a fraction (0.0001 is 0.01 %).
Rate = Annotated[float, msgspec.Meta(gt=-1, lt=1)]


class FundingRate(msgspec.Struct, frozen=True, gc=False):
    """One object of ``/fapi/v1/fundingRate``: the rate charged at ``fundingTime``.

    ``markPrice`` is a string because Binance leaves it empty (``""``) on old events.
    """

    symbol: str
    fundingTime: Ms
    fundingRate: Rate
    markPrice: str = ""

    @property
    def mark_price(self) -> float | None:
        try:
            value = float(self.markPrice)
        except ValueError:
            return None
        return value if math.isfinite(value) and value > 0 else None


class PremiumIndex(msgspec.Struct, frozen=True, gc=False):
    """``/fapi/v1/premiumIndex`` of one symbol: mark, index and the rate due at ``nextFundingTime``."""

    symbol: str
    markPrice: Price
    indexPrice: Price
    lastFundingRate: Rate
    nextFundingTime: Ms
    time: Ms
    estimatedSettlePrice: Price | None = None
    interestRate: Rate = 0.0


class RestAggTrade(msgspec.Struct, frozen=True, gc=False):
    """One object of ``/fapi/v1/aggTrades`` (the stream's fields without ``e``, ``E``, ``s``)."""

    a: Id
    p: Price
    q: Qty
    f: Id
    l: Id  # noqa: E741 - last trade id
    T: Ms
    m: bool


class ServerTime(msgspec.Struct, frozen=True):
    serverTime: Ms


class ApiError(msgspec.Struct, frozen=True):
    code: int
    msg: str = ""


_klines = msgspec.json.Decoder(list[RestKline], strict=False)
_depth = msgspec.json.Decoder(DepthSnapshot, strict=False)
_info = msgspec.json.Decoder(ExchangeInfo, strict=False)
_time = msgspec.json.Decoder(ServerTime, strict=False)
_error = msgspec.json.Decoder(ApiError, strict=False)
_funding = msgspec.json.Decoder(list[FundingRate], strict=False)
_premium = msgspec.json.Decoder(PremiumIndex, strict=False)
_agg_trades = msgspec.json.Decoder(list[RestAggTrade], strict=False)


def _decode(decoder: msgspec.json.Decoder, body: bytes | str, what: str):  # type: ignore[no-untyped-def]
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        preview = body[:120] if isinstance(body, str) else bytes(body[:120]).decode("utf-8", "replace")
        raise ProtocolError(f"malformed {what}: {exc}: {preview}") from None


def decode_klines(body: bytes | str) -> list[RestKline]:
    return _decode(_klines, body, "klines body")


def decode_depth_snapshot(body: bytes | str) -> DepthSnapshot:
    return _decode(_depth, body, "depth snapshot")


def decode_exchange_info(body: bytes | str) -> ExchangeInfo:
    return _decode(_info, body, "exchangeInfo")


def decode_server_time(body: bytes | str) -> int:
    return _decode(_time, body, "server time").serverTime


def decode_funding_rates(body: bytes | str) -> list[FundingRate]:
    return _decode(_funding, body, "fundingRate body")


def decode_premium_index(body: bytes | str) -> PremiumIndex:
    return _decode(_premium, body, "premiumIndex body")


def decode_agg_trades(body: bytes | str) -> list[RestAggTrade]:
    return _decode(_agg_trades, body, "aggTrades body")


def decode_api_error(body: bytes | str) -> ApiError | None:
    """The ``{"code": -1121, "msg": ...}`` body of a failed request, or None if it is not one."""
    try:
        return _error.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None

