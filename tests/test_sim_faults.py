"""Every fault kind, observed the way a client sees it."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from klinestore.sim import FaultError, SimThread
from simfixtures import frames, get, post


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def until_closed(ws, seconds: float = 5.0):  # type: ignore[no-untyped-def]
    try:
        while True:
            await asyncio.wait_for(ws.recv(), seconds)
    except ConnectionClosed as exc:
        return exc


def inject(sim: SimThread, body: dict) -> dict:  # type: ignore[type-arg]
    status, _, reply = post(f"{sim.rest_url}/sim/faults", body)
    assert status == 200, reply
    return reply


def test_drop_sends_a_close_frame_to_every_connection(sim: SimThread) -> None:
    async def main() -> list:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream?streams=btcusdt@kline_1m") as a, \
                connect(sim.ws_url + "/public/stream?streams=btcusdt@depth") as b:
            await frames(a, 0.3)
            reply = await asyncio.to_thread(inject, sim, {"kind": "drop"})
            assert reply["connections"] == 2
            return [await until_closed(a), await until_closed(b)]

    for exc in run(main()):
        assert exc.rcvd is not None and exc.rcvd.code == 1001


def test_reset_drops_tcp_without_a_close_frame(sim: SimThread) -> None:
    async def main():  # type: ignore[no-untyped-def]
        async with connect(sim.ws_url + "/market/stream?streams=btcusdt@kline_1m") as ws:
            await frames(ws, 0.3)
            await asyncio.to_thread(inject, sim, {"kind": "reset"})
            return await until_closed(ws)

    exc = run(main())
    assert exc.rcvd is None  # no close frame: the TCP connection was reset


def test_stall_silences_existing_connections_while_new_ones_get_data(sim: SimThread) -> None:
    async def main() -> tuple:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream?streams=btcusdt@kline_1m") as old:
            await frames(old, 0.3)
            await asyncio.to_thread(inject, sim, {"kind": "stall", "seconds": 2.0})
            await frames(old, 0.1)  # what was in flight before the stall
            pong = await old.ping()
            async with connect(sim.ws_url + "/market/stream?streams=btcusdt@kline_1m") as new:
                fresh = await frames(new, 0.8)
            during = await frames(old, 0.5)
            unanswered = not pong.done()
            after = await frames(old, 1.2)
            return fresh, during, unanswered, after, pong.done()

    fresh, during, unanswered, after, answered_later = run(main())
    assert fresh and during == [] and unanswered
    assert after and answered_later  # the stall ends: data and the pong come back


def test_stall_stream_silences_one_stream(sim: SimThread) -> None:
    async def main() -> tuple:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m") as ws:
            await frames(ws, 0.2)
            await asyncio.to_thread(inject, sim, {"kind": "stall_stream", "stream": "btcusdt@kline_1m", "seconds": 1.0})
            await frames(ws, 0.05)
            during = await frames(ws, 0.8)
            await frames(ws, 0.3)
            after = await frames(ws, 0.5)
            return during, after

    during, after = run(main())
    assert {m["stream"] for m in during} == {"ethusdt@kline_1m"}
    assert {m["stream"] for m in after} == {"btcusdt@kline_1m", "ethusdt@kline_1m"}


def raw_frames(sim: SimThread, fault: dict, stream: str = "btcusdt@aggTrade/ethusdt@aggTrade", seconds: float = 2.0) -> list[str]:  # type: ignore[type-arg]
    async def main() -> list[str]:
        async with connect(f"{sim.ws_url}/market/stream?streams={stream}") as ws:
            await ws.recv()  # the stream flows: inject between two frames
            await asyncio.to_thread(inject, sim, fault)
            out = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    out.append(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
            return out

    return run(main())


def test_malformed_frames(sim: SimThread) -> None:
    got = raw_frames(sim, {"kind": "malformed", "count": 2})
    bad = []
    for raw in got:
        try:
            json.loads(raw)
        except ValueError:
            bad.append(raw)
    assert len(bad) == 2 and len(got) > 10


def test_duplicate_frames(sim: SimThread) -> None:
    got = raw_frames(sim, {"kind": "duplicate", "count": 3})
    repeats = sum(1 for a, b in zip(got, got[1:]) if a == b)
    assert repeats == 3


def test_out_of_order_frames(sim: SimThread) -> None:
    got = [json.loads(r)["data"] for r in raw_frames(sim, {"kind": "out_of_order", "count": 1}, "ethusdt@aggTrade", 3.0)]
    ids = [d["a"] for d in got]
    inversions = [i for i in range(len(ids) - 1) if ids[i] > ids[i + 1]]
    assert len(inversions) == 1 and ids[inversions[0]] == ids[inversions[0] + 1] + 1  # neighbours swapped
    assert sorted(ids) == list(range(min(ids), min(ids) + len(ids)))  # nothing lost


def test_rest_error(sim: SimThread) -> None:
    inject(sim, {"kind": "rest_error", "code": 503, "count": 2})
    statuses = [get(f"{sim.rest_url}/fapi/v1/time")[0] for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert sim.ledger()["/fapi/v1/time"] == 3
    inject(sim, {"kind": "rest_error", "code": 429})
    status, headers, body = get(f"{sim.rest_url}/fapi/v1/ping")
    assert status == 429 and headers["Retry-After"] == "1" and body["code"] == -1003


def test_kline_mismatch_changes_the_rest_record(sim: SimThread) -> None:
    async def main() -> list:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream?streams=btcusdt@kline_1m") as ws:
            got = await frames(ws, 2.5, stop=lambda m: sum(x["data"]["k"]["x"] for x in m) >= 2)
            return [m["data"]["k"] for m in got if m["data"]["k"]["x"]]

    ws_bar = run(main())[0]
    ws_row = [ws_bar["t"], ws_bar["o"], ws_bar["h"], ws_bar["l"], ws_bar["c"], ws_bar["v"], ws_bar["T"], ws_bar["q"],
              ws_bar["n"], ws_bar["V"], ws_bar["Q"], "0"]
    query = f"symbol=BTCUSDT&interval=1m&startTime={ws_bar['t']}&endTime={ws_bar['t']}"
    assert get(f"{sim.rest_url}/fapi/v1/klines?{query}")[2] == [ws_row]
    inject(sim, {"kind": "kline_mismatch", "symbol": "BTCUSDT", "interval": "1m", "open_time": ws_bar["t"]})
    rest_row = get(f"{sim.rest_url}/fapi/v1/klines?{query}")[2][0]
    assert rest_row != ws_row and rest_row[0] == ws_row[0]
    assert abs(float(rest_row[4]) / float(ws_row[4]) - 1) > 0.0001 and float(rest_row[5]) > float(ws_row[5]) * 1.01
    assert get(f"{sim.rest_url}/fapi/v1/klines?{query}")[2] == [rest_row]  # the exchange keeps the correction
    truth = {r[0]: r for r in sim.truth("BTCUSDT", "1m")}
    assert truth[ws_bar["t"]] == rest_row  # ground truth is the REST record
    status, _, faults = get(f"{sim.rest_url}/sim/faults")
    assert faults["corrections"][0]["rest"] == rest_row and faults["applied"]["kline_mismatch"] == 1


def test_depth_gap_breaks_the_pu_chain(sim: SimThread) -> None:
    async def main() -> tuple:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/public/stream?streams=btcusdt@depth@100ms", max_size=None) as ws:
            before = await frames(ws, 0.3)
            await asyncio.to_thread(inject, sim, {"kind": "depth_gap", "symbol": "BTCUSDT", "count": 2})
            after = await frames(ws, 0.6)
            return before, after

    before, after = run(main())
    events = [m["data"] for m in before + after]
    breaks = [i for i in range(1, len(events)) if events[i]["pu"] != events[i - 1]["u"]]
    assert len(breaks) == 1 and breaks[0] >= len(before)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"kind": "explode"}, "kind must be one of"),
        ({"kind": "stall"}, "missing 'seconds'"),
        ({"kind": "stall", "seconds": -1}, "seconds must be"),
        ({"kind": "stall", "seconds": 1, "secnds": 2}, "unknown key 'secnds'"),
        ({"kind": "malformed", "count": 0}, "count must be"),
        ({"kind": "stall_stream", "stream": "BTC", "seconds": 1}, "invalid stream name"),
        ({"kind": "rest_error", "code": 200}, "code must be an HTTP error"),
        ({"kind": "kline_mismatch", "symbol": "NOPEUSDT"}, "unknown symbol"),
        ({"kind": "kline_mismatch", "symbol": "BTCUSDT", "interval": "2m"}, "unknown interval"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_fault_bodies_are_400(sim: SimThread, body: object, words: str) -> None:
    status, _, reply = post(f"{sim.rest_url}/sim/faults", body)
    assert status == 400 and words in reply["error"]
    if isinstance(body, dict) and body.get("symbol") != "NOPEUSDT":
        with pytest.raises(FaultError):
            sim.inject(body)


def test_fault_body_must_be_json(sim: SimThread) -> None:
    status, _, reply = post(f"{sim.rest_url}/sim/faults", b"{nope")
    assert status == 400 and "not JSON" in reply["error"]
