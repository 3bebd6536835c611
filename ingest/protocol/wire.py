"""Binance's wire format as the exchange writes it: the bytes and bodies a server sends.

The simulator (which prints numbers from its fixed-point state) and the gateway (which serves
what the service received) both build their answers here, so the project has one
implementation of the layouts: the combined-stream envelope, control replies, the 12-field
klines row, the depth snapshot, the premiumIndex object and the payload inside a combined
frame. Numbers arrive already printed (decimal strings) and are placed, never reformatted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import msgspec

#: Binance's ``premiumIndex.interestRate`` for USD-M perpetuals (0.01% per 8 h).
INTEREST_RATE = "0.00010000"


def combined(stream: str, payload: bytes) -> bytes:
    """The combined-stream envelope ``{"stream": name, "data": payload}``."""
    return b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"


class _Envelope(msgspec.Struct):
    stream: str
    data: msgspec.Raw


_envelope = msgspec.json.Decoder(_Envelope)


def payload(frame: bytes, stream: str) -> bytes:
    """The event inside a combined frame of ``stream``, byte for byte (what a ``/ws`` client gets).

    Binance writes ``{"stream":...,"data":...}`` in that order, which is sliced without a
    parse; any other layout is decoded once, keeping the event's bytes as they came.
    """
    head = b'{"stream":"' + stream.encode() + b'","data":'
    if frame.startswith(head) and frame.endswith(b"}"):
        return frame[len(head):-1]
    return bytes(_envelope.decode(frame).data)


def reply(request_id: Any, result: Any) -> bytes:
    return json.dumps({"result": result, "id": request_id}, separators=(",", ":")).encode()


def error_reply(request_id: Any, code: int, msg: str) -> bytes:
    return json.dumps({"error": {"code": code, "msg": msg}, "id": request_id}, separators=(",", ":")).encode()


def kline_row(open_time: int, o: str, h: str, low: str, c: str, volume: str, close_time: int, quote: str,
              trades: int, taker_volume: str, taker_quote: str) -> list[int | str]:
    """The 12-field row of ``/fapi/v1/klines`` (and of the archive CSVs); ``ignore`` is "0"."""
    return [open_time, o, h, low, c, volume, close_time, quote, trades, taker_volume, taker_quote, "0"]


def levels_json(levels: Iterable[tuple[str, str]]) -> str:
    """A side of a book as Binance prints it: ``["price","qty"],...`` (no brackets around)."""
    return ",".join([f'["{p}","{q}"]' for p, q in levels])


def depth_snapshot(last_update_id: int, event_ms: int, bids: str, asks: str) -> bytes:
    """The ``/fapi/v1/depth`` body from sides printed by :func:`levels_json`."""
    return (
        f'{{"lastUpdateId":{last_update_id},"E":{event_ms},"T":{event_ms},"bids":[{bids}],"asks":[{asks}]}}'
    ).encode()


def premium_index(symbol: str, mark: str, index: str, settle: str, rate: str, next_funding: int,
                  now: int) -> dict[str, Any]:
    """One ``/fapi/v1/premiumIndex`` object, fields in Binance's order."""
    return {
        "symbol": symbol, "markPrice": mark, "indexPrice": index, "estimatedSettlePrice": settle,
        "lastFundingRate": rate, "interestRate": INTEREST_RATE, "nextFundingTime": next_funding, "time": now,
    }
