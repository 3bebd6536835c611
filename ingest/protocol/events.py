"""Typed decoding of WebSocket frames into frozen events (msgspec, one pass, no dicts).

Binance sends prices and quantities as decimal strings; msgspec's lax mode parses them into
float64 while decoding. Constraints reject what no exchange sends (NaN, infinities,
non-positive prices, negative quantities), so a bad value fails here, at the boundary, with
its JSON path, instead of corrupting a bar later.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

import msgspec

from klinestore.ingest.protocol.errors import ProtocolError

Price = Annotated[float, msgspec.Meta(gt=0, lt=1e15)]
Qty = Annotated[float, msgspec.Meta(ge=0, lt=1e18)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
#: Trade and update ids: any int64 (a larger one cannot be kept in a ring, a WAL record or Parquet).
Id = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
#: Epoch milliseconds before 10000-01-01: later ones no datetime holds (status.json's ISO times,
#: the month of a partition), and a server time of year 287 396 stopped every status.json write.
MS_LIMIT = 253_402_300_800_000
Ms = Annotated[int, msgspec.Meta(ge=0, lt=MS_LIMIT)]
Level = tuple[Price, Qty]


class _Struct(msgspec.Struct, frozen=True, gc=False):
    pass


class Kline(_Struct):
    """The ``k`` object of a kline event (``s`` is absent in continuous klines)."""

    t: Ms  # open time
    T: Ms  # close time
    i: str  # interval
    o: Price
    c: Price
    h: Price
    l: Price  # noqa: E741 - Binance's field name
    v: Qty
    n: Count
    x: bool  # closed
    q: Qty
    V: Qty  # taker buy base volume
    Q: Qty  # taker buy quote volume
    f: Id = -1  # first trade id
    L: Id = -1  # last trade id
    s: str = ""


class KlineEvent(_Struct, tag_field="e", tag="kline"):
    E: Ms
    s: str
    k: Kline

    @property
    def symbol(self) -> str:
        return self.s


class ContinuousKlineEvent(_Struct, tag_field="e", tag="continuous_kline"):
    E: Ms
    ps: str  # pair
    ct: str  # contract type
    k: Kline

    @property
    def symbol(self) -> str:
        return self.ps


class AggTradeEvent(_Struct, tag_field="e", tag="aggTrade"):
    E: Ms
    s: str
    a: Id  # aggregate trade id
    p: Price
    q: Qty
    f: Id  # first trade id
    l: Id  # noqa: E741 - last trade id
    T: Ms  # trade time
    m: bool  # buyer is the maker (so the taker sold)
    nq: Qty | None = None  # normal quantity, added late 2025

    @property
    def symbol(self) -> str:
        return self.s


class TradeEvent(_Struct, tag_field="e", tag="trade"):
    E: Ms
    T: Ms
    s: str
    t: Id
    p: Price
    q: Qty
    m: bool
    X: str = "MARKET"

    @property
    def symbol(self) -> str:
        return self.s


class DepthUpdateEvent(_Struct, tag_field="e", tag="depthUpdate"):
    E: Ms
    T: Ms
    s: str
    U: Id  # first update id in event
    u: Id  # final update id in event
    pu: Id  # final update id of the previous event
    b: list[Level]
    a: list[Level]

    @property
    def symbol(self) -> str:
        return self.s


class MarkPriceEvent(_Struct, tag_field="e", tag="markPriceUpdate"):
    E: Ms
    s: str
    p: Price  # mark price
    T: Ms  # next funding time
    i: Price | None = None  # index price
    P: Price | None = None  # estimated settle price
    r: str = ""  # funding rate; empty for delivery contracts
    ap: Price | None = None

    @property
    def symbol(self) -> str:
        return self.s

    @property
    def funding_rate(self) -> float | None:
        try:
            return float(self.r) if self.r else None
        except ValueError:
            return None


class BookTickerEvent(_Struct, tag_field="e", tag="bookTicker"):
    E: Ms
    T: Ms
    s: str
    u: Id
    b: Price
    B: Qty
    a: Price
    A: Qty

    @property
    def symbol(self) -> str:
        return self.s


Event = Union[
    KlineEvent, ContinuousKlineEvent, AggTradeEvent, TradeEvent, DepthUpdateEvent, MarkPriceEvent,
    BookTickerEvent,
]


class ErrorBody(_Struct):
    code: int
    msg: str = ""


class Frame(_Struct):
    """One combined-stream frame: a data message (``stream`` and ``data``) or a control reply.

    ``data`` is a list only for ``!markPrice@arr``. For control replies ``result`` is UNSET when
    the key is absent (an error reply) and None for ``{"result": null}``.
    """

    stream: str | None = None
    data: Union[Event, list[MarkPriceEvent], None] = None
    id: int | str | None = None
    result: Any = msgspec.UNSET
    error: ErrorBody | None = None

    @property
    def is_control(self) -> bool:
        return self.stream is None


_frame_decoder = msgspec.json.Decoder(Frame, strict=False)
_event_decoder = msgspec.json.Decoder(Event, strict=False)


def decode_frame(raw: bytes | str) -> Frame:
    """Decode a combined-stream frame; raise :class:`ProtocolError` if it is not one.

    A data frame must carry both ``stream`` and ``data``, and the event's symbol must be the
    stream's: a frame that claims one stream and carries another symbol's data is refused.
    """
    try:
        frame = _frame_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed frame: {exc}: {_preview(raw)}") from None
    if frame.stream is not None:
        data = frame.data
        if data is None:
            raise ProtocolError(f"malformed frame: stream {frame.stream!r} without data: {_preview(raw)}")
        if not isinstance(data, list) and not _owns(frame.stream, data.symbol):
            raise ProtocolError(
                f"malformed frame: stream {frame.stream!r} carries {data.symbol!r} data: {_preview(raw)}"
            )
    elif frame.data is not None or (frame.result is msgspec.UNSET and frame.error is None):
        raise ProtocolError(f"malformed frame: neither a stream message nor a reply: {_preview(raw)}")
    return frame


def decode_single(raw: bytes | str) -> Frame:
    """Decode a frame of a single-stream (``/ws/<stream>``) connection into a :class:`Frame`.

    Such frames are bare events; the stream name is not in them, so ``stream`` is left as
    the event type (the connection knows which stream it opened).
    """
    try:
        obj = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed frame: {exc}: {_preview(raw)}") from None
    if isinstance(obj, dict) and "e" in obj:
        try:
            event = msgspec.convert(obj, Event, strict=False)
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"malformed frame: {exc}: {_preview(raw)}") from None
        return Frame(stream=obj["e"], data=event)
    try:
        frame = msgspec.convert(obj, Frame, strict=False)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"malformed frame: {exc}: {_preview(raw)}") from None
    if frame.result is msgspec.UNSET and frame.error is None:
        raise ProtocolError(f"malformed frame: neither an event nor a reply: {_preview(raw)}")
    return frame


def decode_event(raw: bytes | str) -> Event:
    """Decode a bare event (no envelope)."""
    try:
        return _event_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed event: {exc}: {_preview(raw)}") from None


def _owns(stream: str, symbol: str) -> bool:
    head = stream.partition("@")[0]
    return head == symbol.lower() or head.partition("_")[0] == symbol.lower()


def _preview(raw: bytes | str, limit: int = 120) -> str:
    text = raw if isinstance(raw, str) else bytes(raw[:limit]).decode("utf-8", "replace")
    return text[:limit] + ("..." if len(raw) > limit else "")
