"""The gateway over a real service on the simulator: what a bot pointed at it sees.

One service (WebSocket-only mode, the gateway on a free loopback port) runs on its own loop
in a thread for the module; the tests are plain clients over loopback (urllib, websockets,
ccxt), as bots are. The simulator's truth and its own REST answers are the reference, and
its request ledger proves the exchange saw no REST klines call for any of it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from klinestore.core.intervals import MINUTE_MS
from klinestore.service import Service
from klinestore.sim import SimThread
from klinestore.storage import read_bars
from simfixtures import START_MS, get
from support import klinestore_command, subprocess_env
from test_run_command import write_config
from test_service import service_config


class Running:
    """A service on its own event loop in a thread."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.loop = asyncio.new_event_loop()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(service.start())

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def read(self, fn: Any) -> Any:
        """``fn()`` evaluated on the service's loop (its state is the loop's)."""
        async def run() -> Any:
            return fn()
        return self.call(run())

    def stop(self) -> None:
        try:
            self.call(self.service.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimThread, Running]]:
    sim = SimThread(symbols=("BTCUSDT", "ETHUSDT"), speed=60, seed=7, start_ms=START_MS).start()
    data = tmp_path_factory.mktemp("gateway") / "data"
    config = service_config(sim, data, **{"gateway.enabled": True, "gateway.port": 0, "gateway.send_buffer": 4096,
                                          "websocket.streams.depth_refresh_interval": 0.5, "gateway.weight_limit": 300,
                                          "websocket.cache.kline_1m_history": 3,  # older 1m bars: the store's
                                          "websocket.streams.depth_snapshot_limit": 1000,
                                          "websocket.streams.kline_intervals": ["1m", "5m"]})
    run = Running(Service(config))
    try:
        deadline = time.monotonic() + 30
        while read_bars(data, "BTCUSDT", "1m").height < 5 or read_bars(data, "ETHUSDT", "1m").height < 5:
            assert time.monotonic() < deadline, "no closed bars in the store"
            time.sleep(0.2)
        yield sim, run
    finally:
        run.stop()
        sim.stop()


def url(run: Running) -> str:
    return run.service.gateway.rest_url  # type: ignore[union-attr]


def closed_window(run: Running) -> tuple[int, int]:
    """Open times of the oldest closed 1m bar stored and the newest the service holds: the
    ring keeps 3, so an answer over this window is read from the store and the ring together."""
    stored = read_bars(run.service.data_dir, "BTCUSDT", "1m")
    series = run.service.feed.state.series("BTCUSDT", "1m")
    first = int(stored["open_time"][0].timestamp() * 1000)
    last, ring_first = run.read(lambda: (series.last_open_time, series.ring.key_at(0)))
    assert first < ring_first  # the window does reach past the ring into the store
    return first, last


def test_klines_are_the_exchanges_rows_and_errors(running: tuple[SimThread, Running]) -> None:
    sim, run = running
    first, last = closed_window(run)
    status, headers, rows = get(f"{url(run)}/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={first}&endTime={last}")
    assert status == 200 and int(headers["X-MBX-USED-WEIGHT-1M"]) >= 1
    truth = {r[0]: r for r in sim.truth("BTCUSDT", "1m")}
    assert len(rows) == (last - first) // MINUTE_MS + 1 >= 5
    assert rows == [truth[r[0]] for r in rows]  # every field, decimals as the exchange prints them
    assert run.read(lambda: run.service.gateway.rows.store_reads) >= 1  # type: ignore[union-attr]

    # No startTime: the newest bars up to now, the open bar last (as the exchange answers).
    _, _, newest = get(f"{url(run)}/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=3")
    assert len(newest) == 3 and newest[-1][0] > last and newest[-2][0] == newest[-1][0] - MINUTE_MS
    # From before the first bar kept: counting starts at the first bar, as at a listing.
    _, _, head = get(f"{url(run)}/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime=0&limit=2")
    assert [r[0] for r in head] == [first, first + MINUTE_MS]

    assert sim.ledger().get("/fapi/v1/klines", 0) == 0  # WebSocket-only: the exchange saw no klines call
    # The exchange's own answers to bad input, compared with the simulator's (tested to Binance's rules).
    for query in ("symbol=BTCUSDT&interval=1m&limit=0", "symbol=BTCUSDT&interval=1m&limit=1501",
                  f"symbol=BTCUSDT&interval=1m&startTime={last}&endTime={first}", "symbol=BTCUSDT",
                  "symbol=btc-usdt&interval=1m", "symbol=NOPEUSDT&interval=1m", "symbol=BTCUSDT&interval=7m",
                  "symbol=BTCUSDT&interval=1m&limit=abc"):
        ours, theirs = get(f"{url(run)}/fapi/v1/klines?{query}"), get(f"{sim.rest_url}/fapi/v1/klines?{query}")
        assert (ours[0], ours[2]) == (theirs[0], theirs[2]), query
    status, _, body = get(f"{url(run)}/fapi/v1/klines?symbol=BTCUSDT&interval=3m")
    assert status == 400 and body["code"] == -1121 and "BTCUSDT 3m" in body["msg"] and "1m, 5m" in body["msg"]
    assert get(f"{url(run)}/fapi/v1/openInterest?symbol=BTCUSDT")[2] == {  # a path the gateway does not serve
        "code": -5000, "msg": "Path /fapi/v1/openInterest, Method GET is invalid"}


def test_ccxt_gets_the_exchanges_bars(running: tuple[SimThread, Running]) -> None:
    ccxt = pytest.importorskip("ccxt", reason="ccxt is not installed (pip install -e '.[ccxt]')")
    sim, run = running
    # Pointed the way freqtrade's ``ccxt_config`` does it (docs/gateway.md): ccxt deep-merges ``urls``.
    api = {key: f"{url(run)}/fapi/{version}"
           for key, version in (("fapiPublic", "v1"), ("fapiPublicV2", "v2"), ("fapiPublicV3", "v3"))}
    exchange = ccxt.binanceusdm({"enableRateLimit": False, "timeout": 15_000, "urls": {"api": api}})
    first, last = closed_window(run)
    before = sim.ledger().get("/fapi/v1/klines", 0)
    exchange.load_markets()
    bars = exchange.fetch_ohlcv("BTC/USDT:USDT", "1m", since=first, limit=last // MINUTE_MS - first // MINUTE_MS + 1)
    truth = {r[0]: [r[0], *(float(x) for x in r[1:6])] for r in sim.truth("BTCUSDT", "1m")}
    assert len(bars) >= 4 and bars == [truth[b[0]] for b in bars]
    assert sim.ledger().get("/fapi/v1/klines", 0) == before  # none of it reached the exchange


def test_twenty_concurrent_clients_are_served(running: tuple[SimThread, Running]) -> None:
    sim, run = running
    first, last = closed_window(run)
    query = f"{url(run)}/fapi/v1/klines?symbol=ETHUSDT&interval=1m&startTime={first}&endTime={last}"

    def client(_: int) -> list[Any]:
        return [get(query) for _ in range(5)]

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = [a for batch in pool.map(client, range(20)) for a in batch]
    assert len(answers) == 100 and all(status == 200 for status, _, _ in answers)
    assert all(body == answers[0][2] for _, _, body in answers) and len(answers[0][2]) >= 4


def test_websocket_clients_receive_live_klines_and_refusals(running: tuple[SimThread, Running]) -> None:
    sim, run = running
    ws = run.service.gateway.ws_url  # type: ignore[union-attr]
    before = sim.ledger().get("/fapi/v1/klines", 0)

    async def scenario() -> None:
        async with connect(f"{ws}/market/stream?streams=btcusdt@kline_1m") as combined, \
                connect(f"{ws}/ws/ethusdt@kline_5m") as single:
            got = json.loads(await asyncio.wait_for(combined.recv(), 5))
            assert got["stream"] == "btcusdt@kline_1m" and got["data"]["k"]["i"] == "1m"
            bare = json.loads(await asyncio.wait_for(single.recv(), 5))
            assert bare["e"] == "kline" and bare["s"] == "ETHUSDT" and bare["k"]["i"] == "5m"
            await combined.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_3m"], "id": 7}))
            await combined.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
            replies = {}
            while len(replies) < 2:
                msg = json.loads(await asyncio.wait_for(combined.recv(), 5))
                if "id" in msg:
                    replies[msg["id"]] = msg
            assert replies[7]["error"]["code"] == 2 and "'btcusdt@kline_3m'" in replies[7]["error"]["msg"]
            assert replies[8]["result"] == ["btcusdt@kline_1m"]

    asyncio.run(scenario())
    status = json.loads((Path(run.service.status_path)).read_text())
    assert status["gateway"]["rest"] == url(run) and status["gateway"]["ws"] == run.service.gateway.ws_url  # type: ignore[union-attr]
    assert sim.ledger().get("/fapi/v1/klines", 0) == before


def test_a_client_that_never_reads_is_disconnected_and_ingest_goes_on(running: tuple[SimThread, Running]) -> None:
    sim, run = running
    gateway = run.service.gateway
    assert gateway is not None
    port = int(gateway.ws_url.rsplit(":", 1)[1])
    streams = "/".join(run.read(lambda: run.service.feed.dispatcher.routes()))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /stream?streams={streams} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert sock.recv(12) == b"HTTP/1.1 101"  # then never read again
    messages = run.read(lambda: run.service.feed.dispatcher.messages)
    deadline = time.monotonic() + 30
    while run.read(lambda: gateway.fanout.dropped_slow) < 1:
        assert time.monotonic() < deadline, "the slow client was never disconnected"
        time.sleep(0.1)
    assert run.read(lambda: len(gateway.clients)) == 0
    assert run.read(lambda: run.service.feed.dispatcher.messages) > messages
    assert run.read(lambda: run.service.feed.dispatcher.tap) is None  # nobody listens: ingest pays nothing
    sock.close()


def test_a_diff_depth_client_syncs_its_book_against_the_gateway(running: tuple[SimThread, Running]) -> None:
    sim, run = running
    gateway = run.service.gateway
    assert gateway is not None
    stream = next(s for s in run.read(lambda: run.service.feed.dispatcher.routes()) if s.startswith("btcusdt@depth"))

    async def scenario() -> tuple[dict[str, dict[str, str]], int, tuple[float, float]]:
        async with connect(f"{gateway.ws_url}/public/ws/{stream}") as ws:
            events = [json.loads(await asyncio.wait_for(ws.recv(), 5))]
            depth = f"{gateway.rest_url}/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
            snap = await asyncio.to_thread(get, depth)
            for _ in range(50):  # 503 while the service's own book refreshes (the fast market walks off it)
                if snap[0] != 503:
                    break
                await asyncio.sleep(0.1)
                snap = await asyncio.to_thread(get, depth)
            assert snap[0] == 200 and len(snap[2]["bids"]) >= 100 and len(snap[2]["asks"]) >= 100
            book = snap[2]
            sides = {"b": {p: q for p, q in book["bids"]}, "a": {p: q for p, q in book["asks"]}}
            covered = (float(book["bids"][-1][0]), float(book["asks"][-1][0]))  # what a snapshot shows
            last = book["lastUpdateId"]
            synced = False
            applied = 0
            while applied < 4:
                ev = events.pop(0) if events else json.loads(await asyncio.wait_for(ws.recv(), 5))
                if ev["u"] < last:
                    continue  # older than the snapshot
                if not synced:
                    assert ev["U"] <= last <= ev["u"]  # the documented bridge
                    synced = True
                else:
                    assert ev["pu"] == last  # the chain is whole
                for side in ("b", "a"):
                    for p, q in ev[side]:
                        if float(q) == 0:
                            sides[side].pop(p, None)
                        else:
                            sides[side][p] = q
                last = ev["u"]
                applied += 1
            return sides, last, covered

    sides, last, (low, high) = asyncio.run(scenario())
    truth = sim.order_book("BTCUSDT", last)
    # The client knows the price range its snapshot covered (plus what the diffs told it); there
    # its book must be the exchange's, level for level.
    bids = [list(x) for x in sorted(sides["b"].items(), key=lambda kv: -float(kv[0])) if float(x[0]) >= low]
    asks = [list(x) for x in sorted(sides["a"].items(), key=lambda kv: float(kv[0])) if float(x[0]) <= high]
    true_bids = [x for x in truth["bids"] if float(x[0]) >= low]
    true_asks = [x for x in truth["asks"] if float(x[0]) <= high]
    assert len(true_bids) >= 20 and len(true_asks) >= 20
    assert bids == true_bids and asks == true_asks


def test_binance_futures_connector_reads_the_gateway(running: tuple[SimThread, Running]) -> None:
    """Binance's own connector, pointed by its URL settings (docs/gateway.md): REST and the legacy /ws."""
    um = pytest.importorskip("binance.um_futures", reason="binance-futures-connector is not installed "
                                                          "(pip install -e '.[clients]')")
    wsmod = pytest.importorskip("binance.websocket.um_futures.websocket_client")
    sim, run = running
    gateway = run.service.gateway
    assert gateway is not None
    first, last = closed_window(run)
    rows = um.UMFutures(base_url=gateway.rest_url).klines("BTCUSDT", "1m", startTime=first, endTime=last)
    truth = {r[0]: r for r in sim.truth("BTCUSDT", "1m")}
    assert len(rows) >= 4 and rows == [truth[r[0]] for r in rows]

    got: list[dict[str, Any]] = []
    client = wsmod.UMFuturesWebsocketClient(stream_url=gateway.ws_url, on_message=lambda _, m: got.append(json.loads(m)))
    try:
        client.kline(symbol="btcusdt", interval="1m")
        deadline = time.monotonic() + 10
        while not any(m.get("e") == "kline" for m in got):
            assert time.monotonic() < deadline, f"no kline through the connector: {got[:3]}"
            time.sleep(0.05)
    finally:
        client.stop()
    assert {"result": None, "id": got[0]["id"]} in got  # its SUBSCRIBE was acknowledged as Binance does
    kline = next(m for m in got if m.get("e") == "kline")
    assert kline["s"] == "BTCUSDT" and kline["k"]["i"] == "1m"


def test_a_client_over_its_weight_budget_gets_429_and_others_are_served(running: tuple[SimThread, Running]) -> None:
    sim, run = running
    rest = url(run)
    budget = run.service.config.gateway.weight_limit
    query = f"{rest}/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1000"  # weight 5

    def ask(key: str) -> tuple[int, dict[str, str], Any]:
        request = urllib.request.Request(query, headers={"X-MBX-APIKEY": key})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())

    answers = [ask("greedy-bot") for _ in range(budget // 5 + 1)]
    status, headers, body = answers[-1]
    if status == 200:  # the minute turned during the burst: the budget started over
        status, headers, body = ask("greedy-bot")
    assert status == 429 and body["code"] == -1003 and int(headers["Retry-After"]) >= 1
    assert all(a[0] == 200 for a in answers[: budget // 5 - 1])
    assert ask("patient-bot")[0] == 200  # one bot's budget is its own


def test_klinestore_run_gateway_port_serves_and_names_its_urls(tmp_path: Path) -> None:
    """``klinestore run --gateway-port 0``: status.json names the URLs while it runs, and they answer."""
    data = tmp_path / "data"
    proc = subprocess.Popen(
        klinestore_command("run", "--sim", "--for", "8", "--data-dir", str(data), "--config",
                           str(write_config(tmp_path)), "--symbols", "BTCUSDT", "--gateway-port", "0"),
        env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        gateway: dict[str, Any] = {}
        while not gateway.get("rest"):
            assert time.monotonic() < deadline and proc.poll() is None, "no gateway in status.json"
            time.sleep(0.2)
            try:
                gateway = json.loads((data / "status.json").read_text()).get("gateway", {})
            except (OSError, ValueError):
                continue
        assert gateway["rest"].startswith("http://127.0.0.1:") and gateway["ws"] == "ws" + gateway["rest"][4:]
        assert get(f"{gateway['rest']}/fapi/v1/ping")[:3:2] == (200, {})
        assert get(f"{gateway['rest']}/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=2")[0] == 200
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]


def test_premium_index_continuous_klines_and_depth_errors(running: tuple[SimThread, Running]) -> None:
    sim, run = running
    rest = url(run)

    def held() -> float:
        return run.read(lambda: run.service.feed.state.marks.get("BTCUSDT")).mark_price

    for _ in range(100):  # at 60x a markPrice update lands every 17 ms: compare only an answer none overtook
        before = held()
        status, _, one = get(f"{rest}/fapi/v1/premiumIndex?symbol=BTCUSDT")
        if held() == before:
            break
    theirs = get(f"{sim.rest_url}/fapi/v1/premiumIndex?symbol=BTCUSDT")[2]
    assert status == 200 and list(one) == list(theirs)  # Binance's fields, in its order
    assert one["symbol"] == "BTCUSDT" and abs(float(one["markPrice"]) - before) < 1e-6 * before
    assert one["nextFundingTime"] == theirs["nextFundingTime"] and float(one["lastFundingRate"]) == float(
        theirs["lastFundingRate"])
    assert {p["symbol"] for p in get(f"{rest}/fapi/v1/premiumIndex")[2]} == {"BTCUSDT", "ETHUSDT"}

    first, last = closed_window(run)
    window = f"interval=1m&startTime={first}&endTime={last}"
    plain = get(f"{rest}/fapi/v1/klines?symbol=BTCUSDT&{window}")[2]
    assert get(f"{rest}/fapi/v1/continuousKlines?pair=BTCUSDT&contractType=PERPETUAL&{window}")[2] == plain
    assert get(f"{rest}/fapi/v1/continuousKlines?pair=BTCUSDT&contractType=CURRENT_QUARTER&{window}")[0] == 400

    for query in ("symbol=BTCUSDT&limit=7", "symbol=NOPEUSDT", "limit=5"):
        ours, theirs = get(f"{rest}/fapi/v1/depth?{query}"), get(f"{sim.rest_url}/fapi/v1/depth?{query}")
        assert (ours[0], ours[2]) == (theirs[0], theirs[2]), query


def test_agg_trades_not_kept_are_refused_naming_the_setting(running: tuple[SimThread, Running]) -> None:
    """This service keeps no aggTrades (``storage.persist_aggtrades`` off): Binance's unknown-path
    answer, saying which setting leaves it out, rather than an empty list a bot would trust."""
    sim, run = running
    status, _, body = get(f"{url(run)}/fapi/v1/aggTrades?symbol=BTCUSDT&limit=5")
    assert status == 404 and body["code"] == -5000 and "storage.persist_aggtrades" in body["msg"]
    assert body["msg"].startswith("Path /fapi/v1/aggTrades, Method GET is invalid")
    assert get(f"{url(run)}/fapi/v1/markPriceKlines?symbol=BTCUSDT&interval=1m&limit=2")[0] == 200


def test_websocket_clients_are_pinged_and_a_silent_one_is_dropped(tmp_path: Path) -> None:
    """As Binance does: a ping every ``ping_interval``; a client that answers (websockets pongs by
    itself) stays, one that sends nothing for ``pong_timeout`` (a vanished peer) is dropped."""
    sim = SimThread(symbols=("BTCUSDT",), speed=60, seed=7, start_ms=START_MS).start()
    config = service_config(sim, tmp_path / "data", **{"gateway.enabled": True, "gateway.port": 0,
                                                       "gateway.ping_interval": 0.2, "gateway.pong_timeout": 1.0})
    run = Running(Service(config))
    try:
        gateway = run.service.gateway
        assert gateway is not None
        port = int(gateway.ws_url.rsplit(":", 1)[1])
        silent = socket.create_connection(("127.0.0.1", port))
        silent.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert silent.recv(12) == b"HTTP/1.1 101"  # subscribed to nothing: no data, only pings, never a pong

        async def answering() -> tuple[int, int]:
            async with connect(f"{gateway.ws_url}/ws") as ws:
                await asyncio.sleep(2.5)
                pings = [c.pings for c in list(gateway.clients.values())]
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"result": [], "id": 1}
                return len(pings), max(pings)

        clients, pings = run.call(answering())
        assert clients == 1 and pings >= 5  # only the answering client is left, pinged all along
        silent.settimeout(5)
        with pytest.raises((ConnectionError, OSError)):  # dropped: the connection is reset or closed
            while silent.recv(4096):
                pass
            raise ConnectionError("closed")
        silent.close()
    finally:
        run.stop()
        sim.stop()
