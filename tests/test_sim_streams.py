"""Trade and ticker streams, their routes, the legacy URL and the one rule for unserved streams."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

from websockets.asyncio.client import connect

from klinestore.ingest.protocol import decode_frame
from klinestore.sim import SimThread
from simfixtures import frames, get, request


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_trades_are_the_fills_of_the_agg_trades(sim: SimThread) -> None:
    async def main() -> tuple[list, list]:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/public/stream?streams=ethusdt@trade") as public, \
                connect(sim.ws_url + "/market/stream?streams=ethusdt@aggTrade") as market:
            return await asyncio.gather(frames(public, 2.0), frames(market, 2.0))

    raw_trades, raw_aggs = run(main())
    trades = {f["data"]["t"]: f["data"] for f in raw_trades}
    assert raw_trades and all(f["stream"] == "ethusdt@trade" for f in raw_trades)
    assert list(raw_trades[0]["data"]) == ["e", "E", "T", "s", "t", "p", "q", "X", "m"]
    ids = [f["data"]["t"] for f in raw_trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # contiguous, none repeated
    checked = 0
    for agg in (f["data"] for f in raw_aggs):
        fills = [trades.get(i) for i in range(agg["f"], agg["l"] + 1)]
        if None in fills:
            continue  # an aggregated trade at the edge of what the other connection saw
        assert {(t["p"], t["T"], t["m"]) for t in fills} == {(agg["p"], agg["T"], agg["m"])}
        assert sum(Decimal(t["q"]) for t in fills) == Decimal(agg["q"]) and all(Decimal(t["q"]) > 0 for t in fills)
        checked += 1
    assert checked > 0
    frame = decode_frame(json.dumps(raw_trades[0]))  # the project's own decoder reads the frame
    assert frame.data.t == raw_trades[0]["data"]["t"]  # type: ignore[union-attr]


def test_tickers_are_the_24h_window(sim: SimThread) -> None:
    async def main() -> list:  # type: ignore[type-arg]
        names = "btcusdt@miniTicker/btcusdt@ticker/!miniTicker@arr"
        async with connect(f"{sim.ws_url}/market/stream?streams={names}") as ws:
            return await frames(ws, 1.5)

    got = run(main())
    by = {name: [f["data"] for f in got if f["stream"] == name] for name in ("btcusdt@miniTicker", "btcusdt@ticker", "!miniTicker@arr")}
    assert all(by.values()), {k: len(v) for k, v in by.items()}
    mini, ticker = by["btcusdt@miniTicker"][-1], by["btcusdt@ticker"][-1]
    assert list(mini) == ["e", "E", "s", "c", "o", "h", "l", "v", "q"] and mini["e"] == "24hrMiniTicker"
    assert list(ticker) == ["e", "E", "s", "p", "P", "w", "c", "Q", "o", "h", "l", "v", "q", "O", "C", "F", "L", "n"]
    assert all(d["E"] % 500 == 0 for d in by["btcusdt@ticker"])
    status, _, trades = get(f"{sim.rest_url}/sim/truth?symbol=BTCUSDT&kind=aggTrades")
    window = [t for t in trades if ticker["E"] - 86_400_000 < t["T"] <= ticker["E"]]
    assert Decimal(ticker["v"]) == sum(Decimal(t["q"]) for t in window) and ticker["c"] == window[-1]["p"]
    assert ticker["n"] == sum(t["l"] - t["f"] + 1 for t in window) and ticker["O"] == ticker["E"] - 86_400_000
    assert Decimal(ticker["p"]) == Decimal(ticker["c"]) - Decimal(ticker["o"])
    arrays = by["!miniTicker@arr"]
    assert all(isinstance(a, list) for a in arrays) and {m["s"] for m in arrays[0]} == {"BTCUSDT", "ETHUSDT"}
    assert all(m["e"] == "24hrMiniTicker" and m["E"] % 1000 == 0 for a in arrays for m in a)


def test_one_rule_for_streams_the_simulator_does_not_serve(sim: SimThread) -> None:
    async def main() -> list:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream") as ws:
            out = []
            for i, name in enumerate(["btcusdt@miniTicker", "btcusdt@forceOrder", "btcusdt@bogus",
                                      "btcusdt_current_quarter@continuousKline_1m", "!ticker@arr", "BTCUSDT@ticker"], 1):
                out.append(await request(ws, {"method": "SUBSCRIBE", "params": [name], "id": i}))
            out.append(await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 99}))
            return out

    replies = run(main())
    assert replies[0] == {"result": None, "id": 1} and replies[5] == {"result": None, "id": 6}
    for reply in replies[1:5]:
        assert reply["error"]["code"] == 2 and "not served" in reply["error"]["msg"], reply
    assert replies[6]["result"] == ["btcusdt@miniTicker", "BTCUSDT@ticker"]


def test_routes_and_the_legacy_url(sim: SimThread) -> None:
    async def streams_seen(path: str, subscribe: list[str]) -> set[str]:
        async with connect(sim.ws_url + path) as ws:
            if subscribe:
                assert await request(ws, {"method": "SUBSCRIBE", "params": subscribe, "id": 1}) == {"result": None, "id": 1}
            got = await frames(ws, 1.2)
        return {f.get("stream") or f.get("e") for f in got if isinstance(f, dict)}

    async def main() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(
            streams_seen("/ws", ["btcusdt@depth@100ms", "btcusdt@bookTicker", "btcusdt@trade", "btcusdt@kline_1m",
                                 "btcusdt@aggTrade", "btcusdt@markPrice@1s", "btcusdt@miniTicker"]),
            streams_seen("/stream?streams=ethusdt@bookTicker/ethusdt@trade/ethusdt@kline_1m", []),
            streams_seen("/market/stream", ["btcusdt@trade", "btcusdt@bookTicker"]),
            streams_seen("/public/stream", ["btcusdt@miniTicker", "btcusdt@markPrice@1s"]),
        )

    legacy_single, legacy_combined, market_wrong, public_wrong = run(main())
    assert legacy_single == {"depthUpdate", "bookTicker", "trade"}  # /public streams only, bare events
    assert legacy_combined == {"ethusdt@bookTicker", "ethusdt@trade"}
    assert market_wrong == set() and public_wrong == set()


def test_all_mark_prices_stream_decodes_and_matches_premium_index(sim: SimThread) -> None:
    async def main() -> list:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream?streams=!markPrice@arr@1s/btcusdt@markPrice@1s") as ws:
            return await frames(ws, 1.5)

    got = run(main())
    arrays = [f for f in got if f["stream"] == "!markPrice@arr@1s"]
    singles = {f["data"]["E"]: f["data"] for f in got if f["stream"] == "btcusdt@markPrice@1s"}
    assert arrays and all({u["s"] for u in f["data"]} == {"BTCUSDT", "ETHUSDT"} for f in arrays)
    frame = decode_frame(json.dumps(arrays[0]))  # the project's decoder reads the array form
    assert isinstance(frame.data, list) and {e.symbol for e in frame.data} == {"BTCUSDT", "ETHUSDT"}
    same = [u for f in arrays for u in f["data"] if u["s"] == "BTCUSDT" and u["E"] in singles]
    assert same and all(u == singles[u["E"]] for u in same)  # one definition of the mark price
