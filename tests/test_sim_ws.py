"""The WebSocket side as an outside client sees it (plain websockets, no ingest code)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from klinestore.ingest.protocol import decode_frame
from klinestore.sim import SimThread
from simfixtures import START_MS, RawClient, SimFactory, frames, get, request

PRICE_BTC = re.compile(r"^\d+\.\d{2}$")
QTY_BTC = re.compile(r"^\d+\.\d{3}$")
QUOTE_BTC = re.compile(r"^\d+\.\d{5}$")
PRICE_ETH = re.compile(r"^\d+\.\d{2}$")
QTY_ETH = re.compile(r"^\d+\.\d{2}$")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def check_kline(data: dict) -> None:  # type: ignore[type-arg]
    assert list(data) == ["e", "E", "s", "k"] and data["e"] == "kline" and data["s"] == "BTCUSDT"
    k = data["k"]
    assert list(k) == ["t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"]
    for key in ("t", "T", "f", "L", "n"):
        assert type(k[key]) is int
    assert type(k["x"]) is bool and k["i"] == "1m" and k["s"] == "BTCUSDT" and k["B"] == "0"
    assert k["T"] == k["t"] + 59_999 and k["t"] % 60_000 == 0 and data["E"] > k["t"]
    for key in ("o", "c", "h", "l"):
        assert PRICE_BTC.match(k[key]), k
    for key in ("v", "V"):
        assert QTY_BTC.match(k[key]), k
    for key in ("q", "Q"):
        assert QUOTE_BTC.match(k[key]), k
    assert float(k["l"]) <= min(float(k["o"]), float(k["c"])) <= max(float(k["o"]), float(k["c"])) <= float(k["h"])
    assert float(k["V"]) <= float(k["v"]) and (k["n"] == 0) == (k["f"] == -1 == k["L"])
    if k["n"]:
        assert k["L"] >= k["f"]


def check_agg_trade(data: dict) -> None:  # type: ignore[type-arg]
    assert list(data) == ["e", "E", "s", "a", "p", "q", "nq", "f", "l", "T", "m"]
    assert data["e"] == "aggTrade" and data["s"] == "ETHUSDT"
    assert PRICE_ETH.match(data["p"]) and QTY_ETH.match(data["q"]) and data["nq"] == data["q"]
    assert all(type(data[k]) is int for k in ("E", "a", "f", "l", "T")) and type(data["m"]) is bool
    assert data["f"] <= data["l"] and data["E"] >= data["T"]


def test_outside_client_gets_binance_frames(sim: SimThread) -> None:
    async def main() -> list:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream?streams=btcusdt@kline_1m/ethusdt@aggTrade") as ws:
            return await frames(ws, 3.2)

    messages = run(main())
    klines = [m["data"] for m in messages if m["stream"] == "btcusdt@kline_1m"]
    trades = [m["data"] for m in messages if m["stream"] == "ethusdt@aggTrade"]
    assert {m["stream"] for m in messages} == {"btcusdt@kline_1m", "ethusdt@aggTrade"}
    assert list(messages[0]) == ["stream", "data"]
    for data in klines:
        check_kline(data)
    for data in trades:
        check_agg_trade(data)
    for m in messages:
        decode_frame(json.dumps(m).encode())  # the client's decoder accepts every frame
    closed = [k["k"] for k in klines if k["k"]["x"]]
    assert len(closed) >= 2 and len({k["t"] for k in closed}) == len(closed)  # each bar closed once
    for bar in closed:  # the close comes before the next bar's first update
        first_next = next(i for i, k in enumerate(klines) if k["k"]["t"] == bar["t"] + 60_000)
        assert klines.index(next(k for k in klines if k["k"] is bar)) < first_next
        assert all(not k["k"]["x"] for k in klines if k["k"]["t"] == bar["t"] and k["k"] is not bar)
    ids = [t["a"] for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids))) and len(ids) > 20  # every trade, in order
    assert all(b["f"] == a["l"] + 1 for a, b in zip(trades, trades[1:]))


def test_closed_ws_bars_equal_truth_and_rest(sim_factory: SimFactory) -> None:
    sim = sim_factory(symbols=("BTCUSDT", "ETHUSDT"), speed=600, seed=3, start_ms=START_MS)
    streams = "btcusdt@kline_1m/btcusdt@kline_5m/ethusdt@kline_3m"

    async def main() -> list:  # type: ignore[type-arg]
        async with connect(f"{sim.ws_url}/market/stream?streams={streams}") as ws:
            return await frames(ws, 3.0)

    closed: dict[str, list] = {}  # type: ignore[type-arg]
    for m in run(main()):
        k = m["data"]["k"]
        if k["x"]:
            row = [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"], "0"]
            closed.setdefault(f'{m["data"]["s"]} {k["i"]}', []).append(row)
    assert len(closed["BTCUSDT 1m"]) >= 20 and len(closed["BTCUSDT 5m"]) >= 3 and len(closed["ETHUSDT 3m"]) >= 5
    for key, rows in closed.items():
        symbol, interval = key.split()
        opens = [r[0] for r in rows]
        assert opens == sorted(set(opens))  # no bar skipped or repeated, even coalesced at 600x
        assert all(b - a == rows[0][6] - rows[0][0] + 1 for a, b in zip(opens, opens[1:]))
        truth = {r[0]: r for r in sim.truth(symbol, interval)}
        assert [truth[t] for t in opens] == rows
        query = urllib.parse.urlencode({"symbol": symbol, "interval": interval, "startTime": opens[0], "endTime": opens[-1]})
        status, _, rest = get(f"{sim.rest_url}/fapi/v1/klines?{query}")
        assert status == 200 and rest == rows


def test_legacy_and_wrong_routes_ack_but_deliver_nothing(sim: SimThread) -> None:
    async def silent(path: str, subscribe: list[str]) -> tuple[dict, list]:  # type: ignore[type-arg]
        async with connect(sim.ws_url + path) as ws:
            reply = await request(ws, {"method": "SUBSCRIBE", "params": subscribe, "id": 1})
            listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2})
            got = await frames(ws, 1.2)
            return reply, listed["result"], got  # type: ignore[return-value]

    async def main() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(
            silent("/ws", ["btcusdt@kline_1m", "btcusdt@aggTrade"]),
            silent("/stream?streams=ethusdt@aggTrade", ["btcusdt@kline_1m"]),
            silent("/public/stream", ["btcusdt@kline_1m"]),
            silent("/market/stream", ["btcusdt@depth@100ms"]),
            silent("/market/stream", ["BTCUSDT@kline_1m", "ETHUSDT@aggTrade"]),
            silent("/market/ws/BTCUSDT@aggTrade", []),
        )

    results = run(main())
    for reply, listed, got in results:
        assert reply == {"result": None, "id": 1}
        assert got == []
    assert results[1][1] == ["ethusdt@aggTrade", "btcusdt@kline_1m"]
    assert results[4][1] == ["BTCUSDT@kline_1m", "ETHUSDT@aggTrade"]


def test_single_stream_route_sends_bare_events_until_combined(sim: SimThread) -> None:
    async def main() -> tuple[list, dict, list]:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/ws/ethusdt@aggTrade") as ws:
            bare = await frames(ws, 1.0, stop=lambda got: len(got) >= 3)
            reply = await request(ws, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 7})
            wrapped = await frames(ws, 1.5, stop=lambda got: len(got) >= 3)
            return bare, reply, wrapped

    bare, reply, wrapped = run(main())
    assert reply == {"result": None, "id": 7}
    assert bare and all(m["e"] == "aggTrade" for m in bare)
    assert wrapped and all(m["stream"] == "ethusdt@aggTrade" and m["data"]["e"] == "aggTrade" for m in wrapped)


def test_subscribe_list_unsubscribe_live(sim: SimThread) -> None:
    async def main() -> tuple:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream") as ws:
            sub = await request(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m", "ethusdt@markPrice@1s"], "id": 1})
            got = await frames(ws, 1.0)
            listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2})
            unsub = await request(ws, {"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m", "ethusdt@markPrice@1s"], "id": 3})
            await frames(ws, 0.1)
            after = await frames(ws, 0.8)
            return sub, got, listed, unsub, after

    sub, got, listed, unsub, after = run(main())
    assert sub == {"result": None, "id": 1} and unsub == {"result": None, "id": 3}
    assert listed == {"result": ["btcusdt@kline_1m", "ethusdt@markPrice@1s"], "id": 2}
    assert {m["stream"] for m in got} == {"btcusdt@kline_1m", "ethusdt@markPrice@1s"}
    mark = next(m["data"] for m in got if m["stream"] == "ethusdt@markPrice@1s")
    assert list(mark) == ["e", "E", "s", "p", "ap", "i", "P", "r", "T"] and mark["T"] % (8 * 3_600_000) == 0
    assert all(re.match(r"^-?\d+\.\d{8}$", mark[k]) for k in ("p", "ap", "i", "P", "r"))
    assert after == []


def test_control_errors_over_the_wire(sim: SimThread) -> None:
    async def main() -> list:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream") as ws:
            out = []
            for raw in ('{"method":"SET_PROPERTY","params":["x",true],"id":1}',
                        '{"method":"SET_PROPERTY","params":["combined",1],"id":2}',
                        '{"method":"SUBSCRIBE","params":["btcusdt@nothing"],"id":3}',
                        "not json"):
                await ws.send(raw)
                out.append(json.loads(await ws.recv()))
            return out

    codes = [(r["error"]["code"], r["id"]) for r in run(main())]
    assert codes == [(0, 1), (1, 2), (2, 3), (3, None)]


def test_1025th_stream_gets_code_4_and_close_1008(sim: SimThread) -> None:
    names = [f"btcusdt@kline_{iv}" for iv in ("1m", "5m")] + [f"sym{i}usdt@aggTrade" for i in range(1022)]

    async def main() -> tuple:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream?streams=" + "/".join(names[:200]), max_size=None) as ws:
            ok = await request(ws, {"method": "SUBSCRIBE", "params": names[200:], "id": 1})
            listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2})
            refused = await request(ws, {"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 3})
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            except ConnectionClosed as exc:
                return ok, len(listed["result"]), refused, exc.rcvd

    ok, count, refused, close = run(main())
    assert ok == {"result": None, "id": 1} and count == 1024
    assert refused["id"] == 3 and refused["error"]["code"] == 4
    assert close is not None and close.code == 1008


def test_more_than_10_messages_a_second_closes_1008(sim: SimThread) -> None:
    async def main() -> tuple:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream") as ws:
            for i in range(15):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            replies = []
            try:
                while True:
                    replies.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            except ConnectionClosed as exc:
                return replies, exc.rcvd

    replies, close = run(main())
    assert [r["id"] for r in replies] == list(range(10))
    assert close.code == 1008 and close.reason == "Too many requests"


def test_connections_close_at_max_age(sim_factory: SimFactory) -> None:
    sim = sim_factory(speed=60, max_connection_age=90.0)  # 90 exchange s = 1.5 real s

    async def main() -> tuple:  # type: ignore[type-arg]
        started = time.monotonic()
        async with connect(sim.ws_url + "/market/stream?streams=btcusdt@kline_1m") as ws:
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                return time.monotonic() - started, exc.rcvd

    elapsed, close = run(main())
    assert 1.2 < elapsed < 3.5 and close.code == 1001


def test_server_pings_and_drops_clients_that_never_pong(sim_factory: SimFactory) -> None:
    sim = sim_factory(speed=60, ping_interval=30.0, pong_timeout=90.0)  # ping every 0.5 s, deadline 1.5 s
    raw = RawClient(sim.ws_url + "/market/stream")
    assert raw.status == 101

    async def polite() -> bool:
        async with connect(sim.ws_url + "/market/stream?streams=btcusdt@kline_1m") as ws:
            await frames(ws, 2.5)
            return len(sim.connections()) >= 1

    started = time.monotonic()
    pings, close = 0, None
    while time.monotonic() - started < 6:
        opcode, payload = raw.frame()
        if opcode == 0x9:
            pings += 1
        elif opcode == 0x8:
            close = (int.from_bytes(payload[:2], "big"), payload[2:].decode())
            break
    elapsed = time.monotonic() - started
    raw.close()
    assert pings >= 2 and close == (1008, "Pong timeout") and 1.2 < elapsed < 3.5
    assert run(polite())  # a client that answers pings stays connected past the deadline


def test_unknown_path_is_404(sim: SimThread) -> None:
    raw = RawClient(sim.ws_url + "/private/ws/listenkey")
    assert raw.status == 404
    raw.close()


@pytest.mark.parametrize("levels", [None, 5])
def test_depth_stream_syncs_with_rest_snapshot_over_the_wire(sim: SimThread, levels: int | None) -> None:
    name = "btcusdt@depth@100ms" if levels is None else f"btcusdt@depth{levels}@100ms"

    async def main() -> tuple:  # type: ignore[type-arg]
        async with connect(f"{sim.ws_url}/public/stream?streams={name}", max_size=None) as ws:
            early = await frames(ws, 0.4)
            snapshot = (await asyncio.to_thread(get, f"{sim.rest_url}/fapi/v1/depth?symbol=BTCUSDT&limit=1000"))[2]
            late = await frames(ws, 0.8)
            return early + late, snapshot

    events, snapshot = run(main())
    events = [m["data"] for m in events]
    for e in events:
        assert list(e) == ["e", "E", "T", "s", "U", "u", "pu", "b", "a"] and e["e"] == "depthUpdate"
        assert all(isinstance(x, str) for level in e["b"] + e["a"] for x in level)
    assert all(b["pu"] == a["u"] for a, b in zip(events, events[1:]))  # one unbroken chain
    if levels is not None:
        assert all(len(e["b"]) == len(e["a"]) == levels for e in events)
        return
    bids = {p: q for p, q in snapshot["bids"]}
    asks = {p: q for p, q in snapshot["asks"]}
    applied = [e for e in events if e["u"] >= snapshot["lastUpdateId"]]
    assert applied and applied[0]["U"] <= snapshot["lastUpdateId"] <= applied[0]["u"]
    for e in applied:
        for side, levels_ in ((bids, e["b"]), (asks, e["a"])):
            for price, qty in levels_:
                if float(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
    book = sim.order_book("BTCUSDT", applied[-1]["u"])
    assert book["lastUpdateId"] == applied[-1]["u"]
    assert bids.items() <= {p: q for p, q in book["bids"]}.items()
    assert asks.items() <= {p: q for p, q in book["asks"]}.items()
    top = 200
    assert sorted(bids.items(), key=lambda kv: -float(kv[0]))[:top] == [tuple(x) for x in book["bids"][:top]]
    assert sorted(asks.items(), key=lambda kv: float(kv[0]))[:top] == [tuple(x) for x in book["asks"][:top]]


def test_book_ticker_matches_the_book(sim: SimThread) -> None:
    async def main() -> list:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/public/stream?streams=ethusdt@bookTicker") as ws:
            return await frames(ws, 0.5)

    got = [m["data"] for m in run(main())]
    assert len(got) >= 10
    for t in got:
        assert list(t) == ["e", "u", "E", "T", "s", "b", "B", "a", "A"] and float(t["b"]) < float(t["a"])
    last = got[-1]
    book = sim.order_book("ETHUSDT", last["u"])
    assert [last["b"], last["B"]] == book["bids"][0] and [last["a"], last["A"]] == book["asks"][0]


def test_slow_consumer_is_disconnected_and_counted(sim_factory: SimFactory) -> None:
    sim = sim_factory(speed=600, start_ms=START_MS, send_buffer_limit=64 * 1024)
    raw = RawClient(sim.ws_url + "/public/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms")
    try:
        deadline = time.monotonic() + 15
        while sim.stats()["slow_consumer_disconnects"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # the raw client never reads
        assert sim.stats()["slow_consumer_disconnects"] == 1
        assert sim.connections() == []
    finally:
        raw.close()
