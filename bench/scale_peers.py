"""Peers of ``bench_scale``: cryptofeed on the simulator, and the ingest path's maximum message rate.

* :func:`cryptofeed_receiver` (a child process): cryptofeed's ``BinanceFutures`` feed, pinned
  in the ``bench`` extra, on the same simulator and the same streams as ``klinestore run``.
  cryptofeed opens ``<address>/stream?streams=...`` (200 streams a connection), and the
  exchange (and the simulator) serve market streams only on the ``/market`` route, so the feed
  is patched to two addresses: ``<ws>/market`` (klines, aggTrade, markPrice) and ``<ws>/public``
  (depth), REST to the simulator's ``http://``, and its ``wss://``-only address check lets
  ``ws://`` through. cryptofeed takes one kline interval per
  feed, so there is one feed per interval. Messages are counted at its ``message_handler``
  (every frame it is handed); its book snapshots use ``max_depth=100``, like ours.
* :func:`blaster` (a child process): a WebSocket server that acknowledges SUBSCRIBEs and then
  writes one prebuilt blob of frames (every symbol's 5 open klines and its mark price, the
  same payloads every round) straight to the socket as fast as TCP takes it, so the receiver,
  not the sender, is the bottleneck. Repeated payloads still go the whole way (decode,
  open-bar update, mark price); aggTrades are left out since repeated ids would be dropped
  as duplicates early, and depth since a book needs a snapshot.
* :func:`rate_receiver` (a child process): klinestore's ingest path (the pool, the connection,
  the dispatcher into the market state and a memory sink), or (``bare``) a websockets
  ``recv()`` loop that counts frames, against the blaster; prints messages/s and CPU per message.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

KLINES = ("1m", "5m", "15m", "1h", "4h")


def cryptofeed_receiver() -> None:
    """argv: ws URL, REST URL, seconds, symbols (comma-separated); prints {"messages", "connections"}."""
    import logging

    from cryptofeed import FeedHandler
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
    from cryptofeed.defines import CANDLES, FUNDING, L2_BOOK, TRADES
    from cryptofeed.exchanges import BinanceFutures

    import cryptofeed.connection as cf_connection

    logging.disable(logging.CRITICAL)
    checked = cf_connection.WSAsyncConn.__init__

    def plain_ws(self: Any, address: str, conn_id: str, authentication: Any = None, subscription: Any = None,
                 **kwargs: Any) -> None:
        """cryptofeed refuses any address but wss://; the simulator speaks ws:// on loopback."""
        checked(self, "wss://" + address.removeprefix("ws://"), conn_id, authentication, subscription, **kwargs)
        self.address = address

    cf_connection.WSAsyncConn.__init__ = plain_ws  # type: ignore[method-assign]
    ws, rest, seconds, names = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4].split(",")
    rest_endpoint = RestEndpoint(rest, routes=Routes(
        "/fapi/v1/exchangeInfo", l2book="/fapi/v1/depth?symbol={}&limit={}", authentication="/fapi/v1/listenKey",
        open_interest="/fapi/v1/openInterest?symbol={}"))
    count = 0

    def patched(route: str) -> type:
        endpoint = WebsocketEndpoint(f"{ws}/{route}", options={"compression": None})

        class SimFutures(BinanceFutures):  # type: ignore[misc, valid-type]
            websocket_endpoints = [endpoint]
            rest_endpoints = [rest_endpoint]

            async def message_handler(self, msg: str, conn: Any, timestamp: float) -> None:
                nonlocal count
                count += 1
                await super().message_handler(msg, conn, timestamp)

        return SimFutures

    delivered = {CANDLES: 0, TRADES: 0, FUNDING: 0, L2_BOOK: 0}  # callbacks: what the feed made of the frames

    def counter(channel: str) -> Any:
        async def count_one(*_: Any) -> None:
            delivered[channel] += 1

        return count_one

    market, public = patched("market"), patched("public")
    symbols = [f"{s.removesuffix('USDT')}-USDT-PERP" for s in names]
    handler = FeedHandler(config={"uvloop": True, "log": {"filename": os.devnull, "level": "CRITICAL", "disabled": True}})
    feeds = [market(symbols=symbols, channels=[CANDLES], candle_interval=i, candle_closed_only=False,
                    callbacks={CANDLES: counter(CANDLES)}) for i in KLINES]
    feeds.append(market(symbols=symbols, channels=[TRADES, FUNDING], callbacks={TRADES: counter(TRADES), FUNDING: counter(FUNDING)}))
    feeds.append(public(symbols=symbols, channels=[L2_BOOK], depth_interval="500ms", max_depth=100,
                        callbacks={L2_BOOK: counter(L2_BOOK)}))
    connections = sum(len(f.connect()) for f in feeds)
    for feed in feeds:
        handler.add_feed(feed)
    loop = asyncio.new_event_loop()  # of uvloop's policy, which the FeedHandler installed
    asyncio.set_event_loop(loop)
    handler.run(start_loop=False, install_signal_handlers=False)
    loop.run_until_complete(asyncio.sleep(seconds))
    print(json.dumps({"messages": count, "connections": connections, "callbacks": delivered}), flush=True)
    os._exit(0)  # cryptofeed's shutdown waits on its connections; the count is out


def _frames(symbols: list[str], now: int) -> bytes:
    """One round of frames, prebuilt: the 5 open klines (valid updates of the bar open at ``now``)
    and the mark price of every symbol."""
    from klinestore.core.intervals import bar_close, bar_open

    out = []
    t0 = bar_open(now, "1m")
    for s in symbols:
        low = s.lower()
        for i in KLINES:
            t = bar_open(now, i)
            k = {"t": t, "T": bar_close(t, i), "s": s, "i": i, "f": 1, "L": 9, "o": "100.1", "c": "100.4", "h": "100.9",
                 "l": "99.8", "v": "12.5", "n": 9, "x": False, "q": "1255.0", "V": "6.2", "Q": "622.1", "B": "0"}
            body = {"stream": f"{low}@kline_{i}", "data": {"e": "kline", "E": now, "s": s, "k": k}}
            out.append(_ws_frame(json.dumps(body, separators=(",", ":")).encode()))
        mark = {"e": "markPriceUpdate", "E": t0 + 1000, "s": s, "p": "100.2", "i": "100.2", "P": "100.3",
                "r": "0.0001", "T": t0 + 3_600_000}
        out.append(_ws_frame(json.dumps({"stream": f"{low}@markPrice@1s", "data": mark}, separators=(",", ":")).encode()))
    return b"".join(out)


def _ws_frame(payload: bytes) -> bytes:
    """An unmasked server-to-client text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def blaster() -> None:
    """argv: symbols (comma-separated). Prints {"ws": url}; serves until killed."""
    from websockets.asyncio.server import ServerConnection, serve

    symbols = sys.argv[1].split(",")
    blob = _frames(symbols, int(time.time() * 1000)) * 20  # about 100 kB a write for 100 symbols

    async def handler(ws: ServerConnection) -> None:
        sender: asyncio.Task[None] | None = None

        async def blast() -> None:
            while True:
                ws.transport.write(blob)
                await ws.drain()

        try:
            async for raw in ws:
                msg = json.loads(raw)
                await ws.send(json.dumps({"result": None, "id": msg["id"]}))
                if sender is None:
                    sender = asyncio.create_task(blast())
        finally:
            if sender is not None:
                sender.cancel()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            print(json.dumps({"ws": f"ws://127.0.0.1:{port}"}), flush=True)
            await asyncio.Future()

    asyncio.run(main())


def rate_receiver() -> None:
    """argv: "ours" | "bare", ws URL, seconds, symbols. Prints {"messages", "cpu"} over the measured window."""
    kind, url, seconds, symbols = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4].split(",")
    streams = [f"{s.lower()}@kline_{i}" for s in symbols for i in KLINES]
    streams += [f"{s.lower()}@markPrice@1s" for s in symbols]
    result = asyncio.run(_ours(url, seconds, streams) if kind == "ours" else _bare(url, seconds, streams))
    print(json.dumps(result), flush=True)


async def _ours(url: str, seconds: float, streams: list[str]) -> dict[str, float]:
    from klinestore.config import Config
    from klinestore.ingest.clock import ExchangeClock
    from klinestore.ingest.dispatcher import Dispatcher
    from klinestore.ingest.eventlog import EventLog
    from klinestore.ingest.pool import Pool
    from klinestore.ingest.sink import MemorySink
    from klinestore.ingest.state import MarketState

    cfg = Config().replace(**{"websocket.base_url": url, "websocket.connection_pool.max_streams_per_connection": 1024})
    clock = ExchangeClock()
    clock.sync(int(time.time() * 1000))
    state = MarketState(cfg.websocket.cache, clock)
    dispatcher = Dispatcher(state, MemorySink(), clock)
    pool = Pool(cfg.websocket, dispatcher, clock, EventLog(now_ms=clock.now_ms))
    await pool.start(streams)
    await asyncio.sleep(1.0)  # subscribed and flowing
    n0, c0 = sum(c.messages for c in pool.connections), time.process_time()
    await asyncio.sleep(seconds)
    n1, c1 = sum(c.messages for c in pool.connections), time.process_time()
    await pool.stop()
    return {"messages": n1 - n0, "cpu": c1 - c0, "connections": len(pool.connections),
            "unrouted": dispatcher.unexpected, "rejected": sum(state.rejected.values())}


async def _bare(url: str, seconds: float, streams: list[str]) -> dict[str, float]:
    from websockets.asyncio.client import connect

    count = 0
    async with connect(f"{url}/market/stream", max_size=None, compression=None) as ws:
        for n, i in enumerate(range(0, len(streams), 100)):
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams[i : i + 100], "id": n + 1}))
        start = time.monotonic()
        while time.monotonic() - start < 1.0:
            await ws.recv()
        c0, stop = time.process_time(), time.monotonic() + seconds
        while time.monotonic() < stop:
            await ws.recv()
            count += 1
        c1 = time.process_time()
    return {"messages": count, "cpu": c1 - c0, "connections": 1}
