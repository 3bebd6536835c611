"""Sans-I/O protocol: stream names, URLs, grouping, frames, control messages, REST bodies."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinestore.config import Config
from klinestore.ingest.errors import PlanError, ProtocolError
from klinestore.ingest.protocol import (
    ControlReply,
    ErrorCode,
    KlineEvent,
    Route,
    agg_trade_stream,
    decode_depth_snapshot,
    decode_exchange_info,
    decode_frame,
    decode_klines,
    decode_server_time,
    decode_single,
    depth_stream,
    depth_weight,
    kline_stream,
    klines_weight,
    list_subscriptions,
    mark_price_stream,
    parse_stream,
    plan_connections,
    set_property,
    stream_url,
    subscribe,
    unsubscribe,
)
from klinestore.ingest.protocol.control import get_property

KLINE = {
    "e": "kline", "E": 1723161300001, "s": "BTCUSDT",
    "k": {"t": 1723161240000, "T": 1723161299999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 9,
          "o": "61800.10", "c": "61810.00", "h": "61820.00", "l": "61790.50", "v": "12.345", "n": 9,
          "x": True, "q": "762912.5", "V": "6.1", "Q": "377000.1", "B": "0"},
}


def frame(stream: str, data: dict) -> bytes:
    return json.dumps({"stream": stream, "data": data}).encode()


def with_k(**changes: object) -> dict:
    return {**KLINE, "k": {**KLINE["k"], **changes}}


# --- stream names and routes ---------------------------------------------------------------

def test_builders_make_lowercase_names_on_their_routes() -> None:
    assert kline_stream("BTCUSDT", "1m") == "btcusdt@kline_1m"
    assert agg_trade_stream("ethusdt") == "ethusdt@aggTrade"
    assert depth_stream("BTCUSDT") == "btcusdt@depth"
    assert depth_stream("BTCUSDT", "100ms") == "btcusdt@depth@100ms"
    assert mark_price_stream("BTCUSDT") == "btcusdt@markPrice@1s"
    assert parse_stream("btcusdt@kline_4h").route is Route.MARKET
    assert parse_stream("btcusdt@aggTrade").route is Route.MARKET
    assert parse_stream("btcusdt@markPrice@1s").route is Route.MARKET
    assert parse_stream("btcusdt@depth@100ms").route is Route.PUBLIC
    assert parse_stream("btcusdt@bookTicker").route is Route.PUBLIC
    ck = parse_stream("btcusdt_perpetual@continuousKline_1m")
    assert (ck.kind, ck.symbol, ck.contract_type, ck.interval) == ("continuousKline", "BTCUSDT", "perpetual", "1m")


@pytest.mark.parametrize(
    "name",
    ["BTCUSDT@kline_1m", "btcusdt@kline_7m", "btcusdt@kline", "../../etc@aggTrade", "btcusdt@depth@7ms",
     "btcusdt", "", "btcusdt@foo", "btc usdt@aggTrade", "btcusdt_weekly@continuousKline_1m"],
)
def test_invalid_stream_names_are_refused(name: str) -> None:
    with pytest.raises(ProtocolError):
        parse_stream(name)


def test_urls_are_routed() -> None:
    base = "wss://fstream.binance.com"
    assert stream_url(base, "/market", ["btcusdt@kline_1m", "ethusdt@aggTrade"]) == (
        "wss://fstream.binance.com/market/stream?streams=btcusdt@kline_1m/ethusdt@aggTrade"
    )
    assert stream_url(base + "/", "/public", []) == "wss://fstream.binance.com/public/stream"
    assert stream_url(base, "/market", ["btcusdt@aggTrade"], combined=False) == (
        "wss://fstream.binance.com/market/ws/btcusdt@aggTrade"
    )
    with pytest.raises(PlanError):
        stream_url(base, "/market", ["a@aggTrade", "b@aggTrade"], combined=False)


# --- grouping ------------------------------------------------------------------------------

def test_plan_splits_by_route_and_balances() -> None:
    symbols = [f"S{i:03d}USDT" for i in range(250)]
    streams = [kline_stream(s, "1m") for s in symbols] + [depth_stream(s) for s in symbols[:10]]
    plans = plan_connections(streams, max_per_connection=200, max_connections=5)
    market = [p for p in plans if p.route is Route.MARKET]
    public = [p for p in plans if p.route is Route.PUBLIC]
    assert [len(p.streams) for p in market] == [125, 125]
    assert [len(p.streams) for p in public] == [10]
    assert sorted(s for p in plans for s in p.streams) == sorted(streams)


def test_plan_never_exceeds_the_exchange_limit() -> None:
    streams = [kline_stream(f"S{i:04d}USDT", "1m") for i in range(2049)]
    plans = plan_connections(streams, max_per_connection=5000)
    assert len(plans) == 3 and max(len(p.streams) for p in plans) <= 1024


def test_the_per_connection_size_is_a_preference_when_max_connections_binds() -> None:
    streams = [kline_stream(f"S{i:03d}USDT", iv) for i in range(200) for iv in ("1m", "5m", "15m", "1h", "4h", "1d")]
    streams += [depth_stream(f"S{i:03d}USDT") for i in range(200)]
    plans = plan_connections(streams, max_per_connection=200, max_connections=5)
    assert len(plans) == 5 and sorted(s for p in plans for s in p.streams) == sorted(streams)
    assert [len(p.streams) for p in plans] == [300, 300, 300, 300, 200]  # market grows, depth keeps its one
    assert len(plan_connections(streams, max_per_connection=200)) == 7  # unbounded: the preferred size


def test_the_default_pool_fits_1000_symbols_with_every_stream() -> None:
    streams = [kline_stream(f"S{i:04d}USDT", iv) for i in range(1000) for iv in ("1m", "5m", "15m", "1h", "4h")]
    streams += [f"s{i:04d}usdt@aggTrade" for i in range(1000)] + [f"s{i:04d}usdt@markPrice@1s" for i in range(1000)]
    streams += [depth_stream(f"S{i:04d}USDT") for i in range(1000)]
    pool = Config().websocket.connection_pool
    plans = plan_connections(streams, pool.max_streams_per_connection, pool.max_connections)
    assert len(plans) == 40 and max(len(p.streams) for p in plans) == 200


def test_a_max_connections_that_cannot_fit_names_the_key() -> None:
    streams = [kline_stream(f"S{i:04d}USDT", iv) for i in range(1000) for iv in ("1m", "5m", "15m")]
    with pytest.raises(PlanError, match="at least 3 connections .*max_connections is 2"):
        plan_connections(streams, max_per_connection=200, max_connections=2)


def test_plan_dedupes_streams() -> None:
    plans = plan_connections(["btcusdt@aggTrade", "btcusdt@aggTrade"], 10)
    assert plans[0].streams == ("btcusdt@aggTrade",)


# --- frames ------------------------------------------------------------------------------

def test_kline_frame_decodes_to_floats() -> None:
    f = decode_frame(frame("btcusdt@kline_1m", KLINE))
    assert isinstance(f.data, KlineEvent) and not f.is_control
    assert (f.data.k.o, f.data.k.v, f.data.k.n, f.data.k.x) == (61800.1, 12.345, 9, True)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"stream":"btcusdt@kline_1m","data":{"e":"kline"', "truncated"),
        (b"\x00\xff\xfe binary", "binary"),
        (frame("btcusdt@kline_1m", with_k(o="NaN")), "NaN price"),
        (frame("btcusdt@kline_1m", with_k(h="-1")), "negative price"),
        (frame("btcusdt@kline_1m", with_k(v="-0.5")), "negative volume"),
        (frame("btcusdt@kline_1m", with_k(c="1e999")), "infinite price"),
        (frame("btcusdt@kline_1m", with_k(n="many")), "wrong type"),
        (frame("btcusdt@kline_1m", with_k(n=2**63)), "trade count beyond int64"),  # it used to stop every flush
        (frame("btcusdt@kline_1m", with_k(n="9" * 400)), "trade count of 400 digits"),
        (frame("btcusdt@kline_1m", with_k(f=-(2**63) - 1)), "trade id beyond int64"),
        (frame("btcusdt@kline_1m", {**KLINE, "k": {k: v for k, v in KLINE["k"].items() if k != "c"}}), "missing"),
        (frame("ethusdt@kline_1m", KLINE), "other symbol"),
        (frame("btcusdt@kline_1m", {**KLINE, "e": "weird"}), "unknown event"),
        (b'{"stream":"btcusdt@kline_1m"}', "no data"),
        (b'{"data":{}}', "no stream"),
        (b"[]", "array"),
        (b'{"foo":1}', "neither"),
        (b'"text"', "string"),
    ],
)
def test_bad_frames_raise_protocol_error(raw: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match="malformed frame"):
        decode_frame(raw)


def test_control_replies() -> None:
    ok = ControlReply.from_frame(decode_frame(b'{"result":null,"id":7}'))
    assert (ok.id, ok.result, ok.error) == (7, None, None)
    listing = ControlReply.from_frame(decode_frame(b'{"result":["btcusdt@aggTrade"],"id":8}'))
    assert listing.raise_for_error() == ["btcusdt@aggTrade"]
    err = ControlReply.from_frame(decode_frame(b'{"error":{"code":4,"msg":"Too many subscriptions"},"id":9}'))
    assert err.error is not None and err.error.code == ErrorCode.TOO_MANY_SUBSCRIPTIONS
    with pytest.raises(Exception, match="code 4"):
        err.raise_for_error()


def test_control_requests_encode_like_binance() -> None:
    assert json.loads(subscribe(["btcusdt@aggTrade"], 1)) == {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 1}
    assert json.loads(unsubscribe(["a@aggTrade"], 2))["method"] == "UNSUBSCRIBE"
    assert json.loads(list_subscriptions(3)) == {"method": "LIST_SUBSCRIPTIONS", "id": 3}
    assert json.loads(set_property("combined", True, 4)) == {"method": "SET_PROPERTY", "params": ["combined", True], "id": 4}
    assert json.loads(get_property("combined", 5))["params"] == ["combined"]
    with pytest.raises(ProtocolError):
        subscribe([], -1)


def test_single_stream_frames() -> None:
    f = decode_single(json.dumps(KLINE))
    assert isinstance(f.data, KlineEvent)
    assert decode_single(b'{"result":null,"id":1}').is_control
    for bad in (b"{", b'{"e":"kline"}', b'{"x":1}'):
        with pytest.raises(ProtocolError):
            decode_single(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_either_decode_or_raise_protocol_error(raw: bytes) -> None:
    try:
        decode_frame(raw)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(list(KLINE["k"])),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    )
)
def test_mutated_klines_decode_or_raise_protocol_error(changes: dict) -> None:
    raw = frame("btcusdt@kline_1m", with_k(**changes))
    try:
        f = decode_frame(raw)
    except ProtocolError:
        return
    k = f.data.k
    assert k.o > 0 and k.h > 0 and k.l > 0 and k.c > 0 and k.v >= 0 and k.n >= 0
    assert all(-(2**63) <= x < 2**63 for x in (k.t, k.T, k.n, k.f, k.L))  # what a ring, the WAL and Parquet hold


# --- REST bodies ---------------------------------------------------------------------------

def test_rest_bodies() -> None:
    rows = decode_klines(b'[[1,"1.5","2","1","1.7","10",59999,"15.5",3,"4","6","0"]]')
    assert (rows[0].open_time, rows[0].open, rows[0].close_time, rows[0].trades) == (1, 1.5, 59999, 3)
    snap = decode_depth_snapshot(b'{"lastUpdateId":5,"E":1,"T":1,"bids":[["1.0","2"]],"asks":[["1.1","0.5"]]}')
    assert snap.bids == [(1.0, 2.0)] and snap.asks == [(1.1, 0.5)]
    info = decode_exchange_info(
        b'{"serverTime":1,"symbols":[{"symbol":"BTCUSDT","status":"TRADING","onboardDate":5,"extra":1}]}'
    )
    assert info.symbols[0].onboardDate == 5
    assert decode_server_time(b'{"serverTime":123}') == 123
    with pytest.raises(ProtocolError):  # year 287 396 used to sync the clock, then every status.json write failed
        decode_server_time(b'{"serverTime":9007199254740991}')
    for bad in (b'[[1,"x"]]', b"{", b'{"lastUpdateId":"a"}', b'[[1,"1","2","1","1","-10",59999,"1",3,"4","6","0"]]'):
        with pytest.raises(ProtocolError):
            decode_klines(bad) if bad.startswith(b"[") else decode_depth_snapshot(bad)


def test_weights_follow_binance_tables() -> None:
    assert [klines_weight(n) for n in (1, 99, 100, 499, 500, 1000, 1001, 1500)] == [1, 1, 2, 2, 5, 5, 10, 10]
    assert [depth_weight(n) for n in (5, 10, 20, 50, 100, 500, 1000)] == [2, 2, 2, 2, 5, 10, 20]


def test_msgspec_is_the_decoder() -> None:
    # The hot path must not fall back to json + dicts: frames are msgspec structs.
    assert isinstance(decode_frame(frame("btcusdt@kline_1m", KLINE)), msgspec.Struct)
