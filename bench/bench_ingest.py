"""Live ingest: throughput, CPU share, bytes per bar, close-to-callback latency.

The simulator runs as a separate process (``klinestore sim``), so ``time.process_time()`` of
this process is ingest's CPU alone. Every figure stands beside a baseline measured against
the same simulator in the same run:

* throughput: frames/s through the whole ingest path vs a raw ``websockets`` receive loop
  subscribed to the same streams (the floor any websockets-based client pays);
* CPU share at 200 symbols x 5 kline streams at 4 Hz + aggTrade at ~10 Hz (simulator at real
  time), ingest (and, in the notes, ingest with ``read_coalesce`` 2 ms) vs the raw loop;
* bytes per closed bar in the ring buffers vs the seed's deque of dicts (tracemalloc);
* latency from a closed kline's arrival (``recv`` returned) to its ``on_kline_close``
  callback, vs arrival to the inline sink append (the WAL step, no queue hop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bench.harness import Figure
from klinestore.config import Config
from klinestore.core.schema import Bar
from klinestore.ingest.feed import Feed
from klinestore.ingest.klines import KlineSeries, kline_bar
from klinestore.ingest.protocol import decode_frame, subscribe
from klinestore.ingest.sink import MemorySink

ROOT = Path(__file__).resolve().parents[1]
INTERVALS = ("1m", "5m", "15m", "1h", "4h")


@contextlib.contextmanager
def simulator(symbols: list[str], *, speed: float, activity: float = 1.0, kline_update_ms: int = 250) -> Iterator[dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "klinestore", "sim", "--port", "0", "--symbols", ",".join(symbols), "--speed", str(speed),
         "--activity", str(activity), "--kline-update-ms", str(kline_update_ms), "--history-minutes", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(10)


def symbols_named(n: int) -> list[str]:
    return [f"S{i:03d}USDT" for i in range(n)]


def market_streams(symbols: list[str]) -> list[str]:
    return [f"{s.lower()}@kline_{iv}" for s in symbols for iv in INTERVALS] + [f"{s.lower()}@aggTrade" for s in symbols]


async def raw_loop(ws_url: str, streams: list[str], warmup: float, seconds: float) -> tuple[float, float]:
    """Frames/s and CPU share of the plainest client: websockets recv in a loop, nothing else."""
    conns = []
    per = 300
    for i in range(0, len(streams), per):
        ws = await connect(ws_url + "/market/stream", compression=None, max_queue=4096, proxy=None)
        chunk = streams[i : i + per]
        for j in range(0, len(chunk), 100):
            await ws.send(subscribe(chunk[j : j + 100], j + 1), text=True)
            await asyncio.sleep(0.21)
        conns.append(ws)
    count = [0]

    async def receive(ws: Any) -> None:
        recv = ws.recv
        while True:
            await recv(decode=False)
            count[0] += 1

    tasks = [asyncio.create_task(receive(ws)) for ws in conns]
    await asyncio.sleep(warmup)
    c0, w0, p0 = count[0], time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    c, w, p = count[0] - c0, time.perf_counter() - w0, time.process_time() - p0
    for task in tasks:
        task.cancel()
    for ws in conns:
        await ws.close()
    return c / w, p / w


def ingest_config(urls: dict[str, str], symbols: list[str], **changes: Any) -> Config:
    return Config().replace(**{
        "symbols": symbols, "websocket.base_url": urls["ws"], "websocket.rest_url": urls["rest"],
        "websocket.streams.kline_intervals": list(INTERVALS), "websocket.streams.depth": False,
        "websocket.streams.mark_price": False, "websocket.connection_pool.max_streams_per_connection": 300,
        "websocket.heartbeat.timeout": 600.0, **changes,
    })


async def ingest_loop(config: Config, warmup: float, seconds: float, feed_hook: Any = None) -> tuple[float, float, Feed]:
    feed = Feed(config, MemorySink(maxlen=100_000))
    if feed_hook is not None:
        feed_hook(feed)
    await feed.start()
    await asyncio.sleep(warmup)
    d = feed.dispatcher
    c0, w0, p0 = d.messages, time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    c, w, p = d.messages - c0, time.perf_counter() - w0, time.process_time() - p0
    await feed.stop()
    return c / w, p / w, feed


def throughput(quick: bool) -> list[Figure]:
    symbols = symbols_named(10 if quick else 20)
    seconds = 3.0 if quick else 8.0
    with simulator(symbols, speed=200, activity=1.0) as urls:
        raw_rate, raw_cpu = asyncio.run(raw_loop(urls["ws"], market_streams(symbols), 2.0, seconds))
        rate, cpu, feed = asyncio.run(ingest_loop(ingest_config(urls, symbols), 2.0, seconds))
    return [
        Figure("ingest", "end-to-end frames/s (simulator at 200x, 20 symbols x 6 streams)", rate, "frames/s",
               baseline=raw_rate, baseline_name="raw websockets recv loop", goal=">= 80% of the raw loop",
               notes={"ingest_cpu_share": round(cpu, 3), "raw_cpu_share": round(raw_cpu, 3),
                      "ingest_us_per_frame": round(cpu / rate * 1e6, 2), "raw_us_per_frame": round(raw_cpu / raw_rate * 1e6, 2),
                      "rejected": dict(feed.state.rejected)}),
    ]


def cpu_share(quick: bool) -> list[Figure]:
    symbols = symbols_named(200)
    seconds = 5.0 if quick else 20.0
    with simulator(symbols, speed=1, activity=20.0) as urls:
        raw_rate, raw_cpu = asyncio.run(raw_loop(urls["ws"], market_streams(symbols), 3.0, seconds))
        rate, cpu, feed = asyncio.run(ingest_loop(ingest_config(urls, symbols), 3.0, seconds))
        batched_rate, batched_cpu, _ = asyncio.run(
            ingest_loop(ingest_config(urls, symbols, **{"websocket.read_coalesce": 0.002}), 3.0, seconds)
        )
    trades = sum(w.last_id >= 0 for w in feed.state.trades.values())
    return [
        Figure("ingest", "CPU share, 200 symbols x 5 klines at 4 Hz + aggTrade", cpu * 100, "% of a core",
               baseline=raw_cpu * 100, baseline_name="raw websockets recv loop, same streams", better="lower",
               goal="<= 10% of a core",
               notes={"frames_per_s": round(rate), "raw_frames_per_s": round(raw_rate),
                      "us_per_frame": round(cpu / rate * 1e6, 2), "raw_us_per_frame": round(raw_cpu / raw_rate * 1e6, 2),
                      "symbols_with_trades": trades, "read_coalesce_s": feed.config.websocket.read_coalesce,
                      "cpu_share_read_coalesce_2ms": round(batched_cpu * 100, 2),
                      "us_per_frame_read_coalesce_2ms": round(batched_cpu / batched_rate * 1e6, 2),
                      "loop_lag_max_ms": round(feed.lag.max * 1000, 1)}),
    ]


def latency(quick: bool) -> list[Figure]:
    """200 symbols at 60x with kline pushes every 15 s of exchange time: 4 Hz per stream, 200 closes/s."""
    symbols = symbols_named(50 if quick else 200)
    seconds = 4.0 if quick else 10.0
    arrival: dict[tuple[str, str, int], float] = {}
    to_sink: list[float] = []
    to_callback: list[float] = []

    def hook(feed: Feed) -> None:
        d = feed.dispatcher
        dispatch = d.dispatch
        state = {"mono": 0.0}

        def timed_dispatch(raw: bytes, mono: float) -> Any:
            state["mono"] = mono
            return dispatch(raw, mono)

        class TimedSink(MemorySink):
            def append(self, bars: Any) -> None:
                now = time.monotonic()
                for bar in bars:
                    arrival[bar.key] = state["mono"]
                    to_sink.append(now - state["mono"])
                super().append(bars)

        d.dispatch = timed_dispatch  # type: ignore[method-assign]
        d.sink = TimedSink(maxlen=10_000)

        async def on_close(bar: Bar) -> None:
            started = arrival.pop(bar.key, None)
            if started is not None:
                to_callback.append(time.monotonic() - started)

        feed.on_kline_close(on_close)

    with simulator(symbols, speed=60, activity=0.3, kline_update_ms=15_000) as urls:
        config = ingest_config(urls, symbols)
        asyncio.run(ingest_loop(config, 3.0, seconds, feed_hook=hook))
    cb, sink = _percentiles(to_callback), _percentiles(to_sink)
    return [
        Figure("ingest", "closed kline arrival -> on_kline_close, p50", cb[0] * 1e6, "us", baseline=sink[0] * 1e6,
               baseline_name="arrival -> inline sink append (p50)", better="lower",
               notes={"closes": len(to_callback)}),
        Figure("ingest", "closed kline arrival -> on_kline_close, p99", cb[1] * 1e6, "us", baseline=sink[1] * 1e6,
               baseline_name="arrival -> inline sink append (p99)", better="lower",
               notes={"closes": len(to_callback)}),
    ]


def ring_bytes(quick: bool) -> list[Figure]:
    """Bytes per held bar of a 4000-bar ring at 25, 50 and 100 % fill (a ring allocates its
    capacity up front, so a part-full ring costs more per bar), vs a deque of dicts holding
    the same bars."""
    n = 4000
    figures = []
    for fill in (n // 4, n // 2, n):
        raw = [_closed_kline(i) for i in range(fill)]
        bars = [kline_bar("BTCUSDT", k) for k in raw]
        tracemalloc.start()
        series = KlineSeries("BTCUSDT", "1m", n)
        for bar in bars:
            series.commit_close(bar, series.check_close(bar))
        ring = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        tracemalloc.start()
        seed: deque[dict[str, Any]] = deque(maxlen=n)
        for k in raw:  # seed v6.4 §7.1 keeps dicts; with all 11 fields as the issue asks
            seed.append({"t": k.t, "T": k.T, "o": k.o, "h": k.h, "l": k.l, "c": k.c, "v": k.v, "q": k.q, "n": k.n,
                         "V": k.V, "Q": k.Q})
        dicts = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        figures.append(Figure(
            "ingest", f"ring buffer bytes per closed bar (11 kline fields, {fill} of {n} bars: {fill * 100 // n} % full)",
            ring / fill, "B/bar", baseline=dicts / fill, baseline_name="deque of dicts (seed), same bars",
            better="lower", goal="<= 96 B/bar" if fill == n else ""))
    return figures


def _closed_kline(i: int) -> Any:
    t = 1_700_000_040_000 // 60_000 * 60_000 + i * 60_000
    body = {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": t + 60_000, "s": "BTCUSDT", "k": {
        "t": t, "T": t + 59_999, "s": "BTCUSDT", "i": "1m", "f": i, "L": i + 9, "o": f"{100 + i % 7}.5",
        "c": f"{100 + i % 5}.25", "h": "110.0", "l": "95.0", "v": f"{i % 13}.125", "n": 10, "x": True,
        "q": f"{(i % 13) * 100}.5", "V": "0.0", "Q": "0.0", "B": "0"}}}
    return decode_frame(json.dumps(body)).data.k  # type: ignore[union-attr]


def _percentiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    q = statistics.quantiles(values, n=100)
    return statistics.median(values), q[98]


def run(quick: bool) -> list[Figure]:
    return [*ring_bytes(quick), *throughput(quick), *cpu_share(quick), *latency(quick)]
