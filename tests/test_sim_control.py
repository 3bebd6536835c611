"""The exchange's WebSocket rules as pure code: paths, stream names, control replies 0-4."""

from __future__ import annotations

import json

import pytest

from klinestore.ingest.protocol.streams import Route
from klinestore.sim.control import acknowledged, deliverable, handle, parse_path


def answer(raw: str | bytes, subs: tuple[str, ...] = (), combined: bool = True, max_streams: int = 1024):  # type: ignore[no-untyped-def]
    outcome = handle(raw, subscriptions=dict.fromkeys(subs), combined=combined, max_streams=max_streams)
    return outcome, json.loads(outcome.reply)


@pytest.mark.parametrize(
    ("path", "route", "combined", "streams"),
    [
        ("/market/stream?streams=btcusdt@kline_1m/ethusdt@aggTrade", Route.MARKET, True, ("btcusdt@kline_1m", "ethusdt@aggTrade")),
        ("/market/stream", Route.MARKET, True, ()),
        ("/public/ws/btcusdt@depth@100ms", Route.PUBLIC, False, ("btcusdt@depth@100ms",)),
        ("/public/ws", Route.PUBLIC, False, ()),
        ("/ws/btcusdt@kline_1m", None, False, ("btcusdt@kline_1m",)),
        ("/stream?streams=btcusdt@kline_1m", None, True, ("btcusdt@kline_1m",)),
    ],
)
def test_paths(path: str, route: Route | None, combined: bool, streams: tuple[str, ...]) -> None:
    endpoint = parse_path(path)
    assert endpoint is not None
    assert (endpoint.route, endpoint.combined, endpoint.streams) == (route, combined, streams)


@pytest.mark.parametrize("path", ["/", "/private/ws/x", "/market/foo", "/market/ws/a/b", "/api/v3/klines"])
def test_unknown_paths_are_404(path: str) -> None:
    assert parse_path(path) is None


def test_names_acknowledged_and_delivered() -> None:
    assert acknowledged("btcusdt@kline_1m") and acknowledged("BTCUSDT@kline_1m")
    assert not acknowledged("btcusdt@kline_7m") and not acknowledged("nonsense")
    assert deliverable("btcusdt@kline_1m", Route.MARKET) is not None
    assert deliverable("BTCUSDT@kline_1m", Route.MARKET) is None  # uppercase: acknowledged, silent
    assert deliverable("btcusdt@depth", Route.MARKET) is None  # wrong route
    assert deliverable("btcusdt@depth", Route.PUBLIC) is not None
    assert deliverable("btcusdt@kline_1m", None) is None  # legacy URL


def test_subscribe_unsubscribe_list() -> None:
    outcome, reply = answer('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m","btcusdt@kline_1m"],"id":1}')
    assert reply == {"result": None, "id": 1} and outcome.subscribe == ("btcusdt@kline_1m",)
    outcome, reply = answer('{"method":"UNSUBSCRIBE","params":["btcusdt@kline_1m"],"id":2}', ("btcusdt@kline_1m",))
    assert reply == {"result": None, "id": 2} and outcome.unsubscribe == ("btcusdt@kline_1m",)
    _, reply = answer('{"method":"LIST_SUBSCRIPTIONS","id":3}', ("a@aggTrade", "b@aggTrade"))
    assert reply == {"result": ["a@aggTrade", "b@aggTrade"], "id": 3}


def test_properties() -> None:
    outcome, reply = answer('{"method":"SET_PROPERTY","params":["combined",false],"id":4}')
    assert reply == {"result": None, "id": 4} and outcome.combined is False
    _, reply = answer('{"method":"GET_PROPERTY","params":["combined"],"id":5}', combined=False)
    assert reply == {"result": False, "id": 5}


@pytest.mark.parametrize(
    ("raw", "code", "reply_id"),
    [
        ('{"method":"SET_PROPERTY","params":["colour",true],"id":6}', 0, 6),
        ('{"method":"GET_PROPERTY","params":["colour"],"id":6}', 0, 6),
        ('{"method":"SET_PROPERTY","params":["combined","yes"],"id":7}', 1, 7),
        ('{"method":"SUBSCRIBE","params":"btcusdt@kline_1m","id":8}', 2, 8),
        ('{"method":"SUBSCRIBE","params":["btcusdt@kline_9m"],"id":8}', 2, 8),
        ('{"method":"SUBSCRIBE","params":[1],"id":8}', 2, 8),
        ('{"method":"SUBSCRIB","params":[],"id":8}', 2, 8),
        ('{"method":"SUBSCRIBE","params":[],"id":-1}', 2, None),
        ('{"method":"SUBSCRIBE","params":[],"id":"x"}', 2, None),
        ("[1, 2]", 2, None),
        ('{"method": "SUBSCRIBE", ', 3, None),
        (b"\xff\xfe", 3, None),
    ],
)
def test_error_codes(raw: str, code: int, reply_id: int | None) -> None:
    outcome, reply = answer(raw)
    assert reply["id"] == reply_id
    assert reply["error"]["code"] == code and isinstance(reply["error"]["msg"], str) and reply["error"]["msg"]
    assert outcome.subscribe == () and outcome.close is None


def test_too_many_subscriptions_is_code_4_and_close_1008() -> None:
    subs = tuple(f"s{i}usdt@aggTrade" for i in range(1023))
    outcome, reply = answer('{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":9}', subs)
    assert reply == {"result": None, "id": 9} and outcome.close is None
    subs += ("btcusdt@aggTrade",)
    outcome, reply = answer('{"method":"SUBSCRIBE","params":["ethusdt@aggTrade"],"id":10}', subs)
    assert reply["error"]["code"] == 4 and reply["id"] == 10
    assert outcome.close == (1008, "Too many subscriptions") and outcome.subscribe == ()
