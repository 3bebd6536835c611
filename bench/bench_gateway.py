"""The gateway: klines (limit 500) requests/s and p99 latency with 1, 20 and 100 clients,
WebSocket fan-out to 100 clients, and the dispatcher hook's cost, each beside a baseline
from the same run.

The simulator and the service (``klinestore run --gateway-port 0``, fallback mode so its
1m ring starts with 600 bars of history) run as separate processes; the service's CPU is
read from ``/proc``, so it is the whole service (ingest, storage jobs, the gateway):

* klines: requests/s of ``/fapi/v1/klines?limit=500`` vs ``/fapi/v1/ping`` on the same
  server with the same clients (the HTTP floor), taking turns; the p99 latency of each;
* the service's CPU share while idle (no client: ingest alone) beside its share under load;
* fan-out: frames delivered per second to 100 WebSocket clients subscribed to every stream
  the service ingests, vs frames the service received x 100 (every frame to every client);
* the dispatcher's hook: ``Dispatcher.dispatch`` over recorded frames with no client (the
  hook is one attribute test) vs the same method without the hook, interleaved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bench.harness import Figure, interleaved
from klinestore.config import Config
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.dispatcher import Dispatcher
from klinestore.ingest.protocol.events import decode_frame
from klinestore.ingest.sink import MemorySink
from klinestore.ingest.state import MarketState

ROOT = Path(__file__).resolve().parents[1]
KLINES = "/fapi/v1/klines?symbol=S000USDT&interval=1m&limit=500"
PING = "/fapi/v1/ping"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def processes(symbols: list[str]) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """The simulator and the service; yields the service process and its data directory."""
    sim = subprocess.Popen(
        [sys.executable, "-m", "klinestore", "sim", "--port", "0", "--symbols", ",".join(symbols), "--speed", "1",
         "--history-minutes", "600"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    tmp = tempfile.TemporaryDirectory()
    service: subprocess.Popen[str] | None = None
    try:
        assert sim.stdout is not None
        urls = json.loads(sim.stdout.readline())
        config = Path(tmp.name) / "config.json"
        config.write_text(json.dumps({
            "modes": {"websocket_only_klines": False, "disable_rest_fallback": False},
            "gateway": {"weight_limit": 10**9, "max_clients": 1000}, "jobs": {"status_interval": 0.5},
            "websocket": {"streams": {"kline_intervals": ["1m", "5m", "15m", "1h", "4h"]}},
        }))
        data = Path(tmp.name) / "data"
        service = subprocess.Popen(
            [sys.executable, "-m", "klinestore", "run", "--config", str(config), "--data-dir", str(data),
             "--symbols", ",".join(symbols), "--ws-url", urls["ws"], "--rest-url", urls["rest"], "--gateway-port", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        yield service, data
    finally:
        for proc in (service, sim):
            if proc is not None:
                proc.terminate()
                proc.wait(20)
        tmp.cleanup()


def status(data: Path) -> dict[str, Any]:
    return json.loads((data / "status.json").read_text())


async def http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    """One keep-alive GET on an open connection (the plainest client: no library in the way)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    body = await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{path}: {head.splitlines()[0]!r} {body[:200]!r}")
    return body


async def load(host: str, port: int, path: str, clients: int, seconds: float,
               data: Path | None = None) -> tuple[float, float, float]:
    """(requests/s, p99 latency in ms, worst loop lag in ms the service reported meanwhile) of
    ``clients`` connections asking ``path`` back to back."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    lags: list[float] = [0.0]

    async def sample() -> None:  # the service's event-loop lag (ingest's delay), from status.json
        while data is not None and time.perf_counter() < stop:
            with contextlib.suppress(OSError, ValueError, KeyError):
                lags.append(float(status(data)["loop_lag_ms"]["last"]))
            await asyncio.sleep(0.25)

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                await http_get(reader, writer, path)
                latencies.append(time.perf_counter() - t)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(sample(), *(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return len(latencies) / elapsed, latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, max(lags)


async def fanout(ws_url: str, streams: list[str], clients: int, seconds: float,
                 received: Any) -> tuple[float, float]:
    """Frames per second received by ``clients`` WebSocket clients on every stream, and by the
    service (``received()``: its message count) over the same window."""
    count = [0]
    conns = [await connect(f"{ws_url}/stream?streams={'/'.join(streams)}", compression=None, max_queue=None)
             for _ in range(clients)]

    async def receive(ws: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                await ws.recv(decode=False)
                count[0] += 1

    tasks = [asyncio.create_task(receive(ws)) for ws in conns]
    await asyncio.sleep(1.0)
    c0, m0, t0 = count[0], received(), time.perf_counter()
    await asyncio.sleep(seconds)
    c1, m1, t1 = count[0], received(), time.perf_counter()
    rate, in_rate = (c1 - c0) / (t1 - t0), (m1 - m0) / (t1 - t0)
    for task in tasks:
        task.cancel()
    for ws in conns:
        await ws.close()
    return rate, in_rate


def worst_lag(data: Path, seconds: float) -> float:
    """The worst event-loop lag (ms) the service reports over ``seconds`` with no client."""
    worst, stop = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        with contextlib.suppress(OSError, ValueError, KeyError):
            worst = max(worst, float(status(data)["loop_lag_ms"]["last"]))
        time.sleep(0.25)
    return worst


def service_window(pid: int, data: Path, seconds: float) -> tuple[float, float]:
    """(CPU share of the service, frames/s it received) over ``seconds`` with nothing else going on."""
    c0, m0, t0 = _cpu_seconds(pid), status(data)["counters"]["messages"], time.perf_counter()
    time.sleep(seconds)
    cpu, m1, w = _cpu_seconds(pid) - c0, status(data)["counters"]["messages"], time.perf_counter() - t0
    return cpu / w, (m1 - m0) / w


def wait_ready(data: Path, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            gw = status(data)["gateway"]
            if gw.get("rest"):
                host, port = gw["rest"].removeprefix("http://").rsplit(":", 1)
                rows = json.loads(asyncio.run(_one(host, int(port), KLINES)))
                if len(rows) == 500:
                    return gw
        time.sleep(0.5)
    raise RuntimeError("the service never held 500 1m bars")


async def _one(host: str, port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        return await http_get(reader, writer, path)
    finally:
        writer.close()


def gateway_figures(quick: bool) -> list[Figure]:
    symbols = [f"S{i:03d}USDT" for i in range(10)]
    seconds = 1.5 if quick else 3.0
    figures: list[Figure] = []
    with processes(symbols) as (service, data):
        gw = wait_ready(data)
        host, port = gw["rest"].removeprefix("http://").rsplit(":", 1)
        idle_cpu, received = service_window(service.pid, data, seconds)
        idle_lag = worst_lag(data, seconds)
        for clients in (1, 20, 100):
            c0, t0 = _cpu_seconds(service.pid), time.perf_counter()
            rate, p99, lag = asyncio.run(load(host, int(port), KLINES, clients, seconds, data))
            busy = (_cpu_seconds(service.pid) - c0) / (time.perf_counter() - t0)
            floor, floor_p99, _ = asyncio.run(load(host, int(port), PING, clients, seconds))
            notes = {"p99_ms": round(p99, 2), "ping_p99_ms": round(floor_p99, 2),
                     "service_cpu_share_under_load": round(busy, 3), "service_cpu_share_idle": round(idle_cpu, 3),
                     "loop_lag_ms_worst_under_load": round(lag, 1), "loop_lag_ms_worst_idle": round(idle_lag, 1)}
            figures.append(Figure("gateway", f"klines limit 500, {clients} client(s)", rate, "requests/s",
                                  baseline=floor, baseline_name="/fapi/v1/ping on the same server and clients",
                                  notes=notes))
            figures.append(Figure("gateway", f"klines limit 500 p99, {clients} client(s)", p99, "ms",
                                  baseline=floor_p99, baseline_name="/fapi/v1/ping p99", better="lower"))
        names = [f"{s.lower()}@{k}" for s in symbols for k in (
            "kline_1m", "kline_5m", "kline_15m", "kline_1h", "kline_4h", "aggTrade", "markPrice@1s", "depth@500ms")]
        c0, t0 = _cpu_seconds(service.pid), time.perf_counter()
        delivered, in_rate = asyncio.run(fanout(gw["ws"], names, 100, max(seconds, 4.0),
                                                lambda: status(data)["counters"]["messages"]))
        fan_cpu = (_cpu_seconds(service.pid) - c0) / (time.perf_counter() - t0)
        figures.append(Figure("gateway", "WebSocket fan-out to 100 clients", delivered, "frames/s delivered",
                              baseline=in_rate * 100, baseline_name="frames the service received x 100",
                              notes={"service_frames_per_s": round(in_rate, 1), "service_cpu_share": round(fan_cpu, 3),
                                     "service_cpu_share_idle": round(idle_cpu, 3)}))
        figures.append(Figure("gateway", "service CPU, idle gateway (ingest alone)", idle_cpu * 100, "% of a core",
                              baseline=fan_cpu * 100, baseline_name="same service fanning out to 100 clients",
                              better="lower", notes={"frames_per_s": round(received, 1)}))
    return figures


# --- the dispatcher hook ---------------------------------------------------------------------

def _dispatch_without_hook(self: Dispatcher, raw: bytes | str, mono: float) -> Any:
    """``Dispatcher.dispatch`` as it was before the gateway's hook (the baseline)."""
    self.messages += 1
    frame = decode_frame(raw)
    stream = frame.stream
    if stream is None:
        return frame
    route = self._routes.get(stream)
    if route is None:
        self.unexpected += 1
        return frame
    data = frame.data
    self.clock.observe(data.E, mono)  # type: ignore[union-attr]
    self._mono = mono
    route[0](route[1], data)
    return frame


def hook_figure(quick: bool) -> Figure:
    config = Config()
    frames = [
        json.dumps({"stream": "btcusdt@markPrice@1s", "data": {
            "e": "markPriceUpdate", "E": 1_714_521_600_000 + i, "s": "BTCUSDT", "p": "62000.1", "i": "62001.2",
            "P": "62000.5", "r": "0.0001", "T": 1_714_550_400_000}}).encode()
        for i in range(20_000)
    ]
    clock = ExchangeClock()
    d = Dispatcher(MarketState(config.websocket.cache, clock), MemorySink(), clock)
    d.route("btcusdt@markPrice@1s")

    def with_hook() -> None:
        for raw in frames:
            d.dispatch(raw, 0.0)

    def without() -> None:
        for raw in frames:
            _dispatch_without_hook(d, raw, 0.0)

    best = interleaved({"hook": with_hook, "none": without}, rounds=5 if quick else 25)
    n = len(frames)
    return Figure("gateway", "dispatch with the gateway hook, no client", best["hook"] / n * 1e9, "ns/frame",
                  baseline=best["none"] / n * 1e9, baseline_name="the same dispatch without the hook",
                  better="lower", goal="costs nothing without a client")


def run(quick: bool) -> list[Figure]:
    return [hook_figure(quick), *gateway_figures(quick)]
