"""Binance frames for unit tests (combined-stream envelopes, decimal strings like the exchange)."""

from __future__ import annotations

import json

from klinestore.core.intervals import bar_close
from klinestore.ingest.protocol import decode_frame

T0 = 1_700_000_040_000 - 1_700_000_040_000 % 3_600_000  # an hour boundary (UTC ms)


def kline(
    symbol: str = "BTCUSDT",
    interval: str = "1m",
    t: int = T0,
    *,
    o: float = 100.0,
    h: float = 101.0,
    l: float = 99.0,  # noqa: E741
    c: float = 100.5,
    v: float = 10.0,
    n: int = 5,
    x: bool = False,
    E: int | None = None,  # noqa: N803
    T: int | None = None,  # noqa: N803
) -> bytes:
    close = bar_close(t, interval) if T is None else T
    k = {
        "t": t, "T": close, "s": symbol, "i": interval, "f": 1, "L": 1 + n, "o": f"{o}", "c": f"{c}", "h": f"{h}",
        "l": f"{l}", "v": f"{v}", "n": n, "x": x, "q": f"{v * c}", "V": f"{v / 2}", "Q": f"{v * c / 2}", "B": "0",
    }
    event = {"e": "kline", "E": (close + 1 if x else t + 1000) if E is None else E, "s": symbol, "k": k}
    return json.dumps({"stream": f"{symbol.lower()}@kline_{interval}", "data": event}).encode()


def agg_trade(symbol: str = "BTCUSDT", a: int = 1, *, p: float = 100.0, q: float = 1.0, T: int = T0, m: bool = False) -> bytes:  # noqa: N803
    event = {"e": "aggTrade", "E": T + 5, "s": symbol, "a": a, "p": f"{p}", "q": f"{q}", "f": a * 10, "l": a * 10 + 1,
             "T": T, "m": m}
    return json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": event}).encode()


def depth(symbol: str, U: int, u: int, pu: int, bids=(), asks=(), *, E: int = T0, stream: str | None = None) -> bytes:  # noqa: N803
    event = {"e": "depthUpdate", "E": E, "T": E, "s": symbol, "U": U, "u": u, "pu": pu,
             "b": [[f"{p}", f"{q}"] for p, q in bids], "a": [[f"{p}", f"{q}"] for p, q in asks]}
    return json.dumps({"stream": stream or f"{symbol.lower()}@depth@500ms", "data": event}).encode()


def mark(symbol: str = "BTCUSDT", p: float = 100.0, r: str = "0.0001", E: int = T0) -> bytes:
    event = {"e": "markPriceUpdate", "E": E, "s": symbol, "p": f"{p}", "i": f"{p}", "P": f"{p}", "r": r, "T": E + 3_600_000}
    return json.dumps({"stream": f"{symbol.lower()}@markPrice@1s", "data": event}).encode()


def event(raw: bytes):  # noqa: ANN201 - the decoded event, whatever its type
    return decode_frame(raw).data
