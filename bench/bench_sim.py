"""The exchange simulator's cost: CPU share and frames per CPU-second, beside a raw server.

Each scenario runs ``klinestore sim`` in a subprocess, subscribes a plain websockets client
to its streams and reads the simulator's CPU time from ``/proc``. The baseline, in the same
run, is a bare websockets server (also a subprocess) that sends the simulator's own frames,
pre-encoded, at the same rate over the same number of connections: what is left between
the two is the cost of simulating the market (generation, bars, book, encoding, fan-out).

Scenarios: the service's demo load (2 symbols at speed 60 with every stream: 12 kline
intervals, aggTrade, markPrice@1s, depth@100ms and depth each), the same without depth (to
show what the book costs), and the ingest benchmark load (200 symbols at speed 1 with 5
kline streams and aggTrade each).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass

from websockets.asyncio.client import connect

from bench.harness import Figure, start_json_process, stop_process

KLINES_ALL = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
WARMUP = 2.0
URL_STREAMS = 150  # streams per connection URL (websockets caps request lines at 8 KiB)


@dataclass(frozen=True)
class Scenario:
    name: str
    symbols: tuple[str, ...]
    speed: float
    market: tuple[str, ...]  # stream suffixes on /market
    public: tuple[str, ...] = ()  # stream suffixes on /public
    goal: str = ""

    def groups(self) -> list[tuple[str, list[str]]]:
        out = []
        for route, kinds in (("market", self.market), ("public", self.public)):
            names = [f"{s.lower()}@{k}" for s in self.symbols for k in kinds]
            out += [(route, names[i : i + URL_STREAMS]) for i in range(0, len(names), URL_STREAMS)]
        return out


SCENARIOS = (
    Scenario("2 symbols x60, every stream", ("BTCUSDT", "ETHUSDT"), 60,
             tuple(f"kline_{i}" for i in KLINES_ALL) + ("aggTrade", "markPrice@1s"), ("depth@100ms", "depth"),
             goal="well under 30 % of a core"),
    Scenario("2 symbols x60, klines + aggTrade (no depth)", ("BTCUSDT", "ETHUSDT"), 60,
             tuple(f"kline_{i}" for i in KLINES_ALL) + ("aggTrade",)),
    Scenario("200 symbols x1, 5 klines + aggTrade", tuple(f"S{i:03d}USDT" for i in range(200)), 1,
             ("kline_1m", "kline_5m", "kline_15m", "kline_1h", "kline_4h", "aggTrade"), goal="sustainable (< 100 %)"),
)



def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(base: str, groups: list[tuple[str, list[str]]], seconds: float, pid: int) -> tuple[float, float, list[str]]:
    """(CPU share, frames/s received, a sample of frames) over ``seconds`` after a warm-up."""
    count = 0
    sample: list[str] = []
    stop = time.monotonic() + WARMUP + seconds + 0.5

    async def consume(route: str, names: list[str]) -> None:
        nonlocal count
        path = f"/{route}/stream?streams={'/'.join(names)}" if names else ""
        async with connect(base + path, max_size=None, compression=None) as ws:
            while (left := stop - time.monotonic()) > 0:
                try:
                    raw = await asyncio.wait_for(ws.recv(), left)
                except asyncio.TimeoutError:
                    return
                count += 1
                if len(sample) < 2000:
                    sample.append(raw if isinstance(raw, str) else raw.decode())

    async def window() -> tuple[float, float]:
        await asyncio.sleep(WARMUP)
        cpu0, t0, n0 = _cpu_seconds(pid), time.monotonic(), count
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        return (_cpu_seconds(pid) - cpu0) / elapsed, (count - n0) / elapsed

    results = await asyncio.gather(window(), *(consume(r, n) for r, n in groups))
    share, rate = results[0]
    return share, rate, sample




def measure_sim(s: Scenario, seconds: float) -> tuple[float, float, list[str]]:
    proc, urls = start_json_process([sys.executable, "-m", "klinestore", "-q", "sim", "--port", "0", "--seed", "7",
                         "--symbols", ",".join(s.symbols), "--speed", str(s.speed)])
    try:
        return asyncio.run(_measure(urls["ws"], s.groups(), seconds, proc.pid))
    finally:
        stop_process(proc)


def measure_raw(sample: list[str], rate: float, connections: int, seconds: float) -> tuple[float, float]:
    """CPU share and frames/s of a bare websockets server sending ``sample`` at ``rate``."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(sample, f)
    try:
        proc, urls = start_json_process([sys.executable, "-c", "from bench.bench_sim import raw_server; raw_server()",
                             f.name, str(rate / max(1, connections))])
        try:
            share, got, _ = asyncio.run(_measure(urls["ws"], [("raw", [])] * connections, seconds, proc.pid))
            return share, got
        finally:
            stop_process(proc)
    finally:
        os.unlink(f.name)


def raw_server() -> None:
    """The baseline: send pre-encoded frames round-robin at a fixed rate per connection."""
    from websockets.asyncio.server import broadcast, serve

    with open(sys.argv[1]) as f:
        frames = [frame.encode() for frame in json.load(f)] or [b"{}"]
    per_second = float(sys.argv[2])

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        sent, started, i = 0, time.monotonic(), 0
        while True:
            due = int((time.monotonic() - started) * per_second) - sent
            for _ in range(due):
                broadcast([ws], frames[i], text=True)
                i = (i + 1) % len(frames)
            sent += max(due, 0)
            await asyncio.sleep(0.02)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(json.dumps({"ws": f"ws://127.0.0.1:{port}"}), flush=True)
            await asyncio.Future()

    asyncio.run(main())


def measure_tickers(quick: bool) -> Figure:
    """ms to compute every symbol's 24 h window (one ``!miniTicker@arr`` push or one
    ``ticker/24hr`` without symbol) with whole hours folded once, beside a plain fold of the
    window's trades; interleaved, the same pushes (one exchange second apart) for both."""
    from klinestore.sim import SimConfig
    from klinestore.sim.server import Simulator
    from klinestore.sim.tickers import _part

    symbols = tuple(f"S{i:03d}USDT" for i in range(50 if quick else 200))
    start = 1_714_521_600_000
    config = SimConfig(symbols=symbols, seed=3, start_ms=start, history_minutes=2 * 1440)
    sim, other = Simulator(config), Simulator(config)  # own hour caches: one way cannot evict the other's
    for symbol in symbols:  # a running simulator has folded the window's whole hours already
        sim.tickers.rolling(symbol, start)
    times: dict[str, list[float]] = {"cached": [], "plain": []}
    for i in range(3 if quick else 5):
        now = start + 1000 * (i + 1)
        for name in ("cached", "plain"):
            t0 = time.perf_counter()
            for symbol in symbols:
                if name == "cached":
                    sim.tickers.rolling(symbol, now)
                else:
                    _part(other.market, symbol, now - 86_400_000, now)
            times[name].append(1000 * (time.perf_counter() - t0))
    best = {name: min(values) for name, values in times.items()}
    return Figure("sim", f"24 h ticker windows of {len(symbols)} symbols (one push)", best["cached"], "ms",
                  baseline=best["plain"], baseline_name="plain fold of the window's trades", better="lower",
                  notes={"tries_ms": {k: [round(v, 1) for v in vs] for k, vs in times.items()}})


def run(quick: bool) -> list[Figure]:
    seconds = 3.0 if quick else 10.0
    figures = [measure_tickers(quick)]
    for s in SCENARIOS:
        share, rate, sample = measure_sim(s, seconds)
        raw_share, raw_rate = measure_raw(sample, rate, len(s.groups()), seconds)
        notes = {"frames_per_s": round(rate), "raw_frames_per_s": round(raw_rate), "seconds": seconds}
        figures.append(Figure("sim", f"{s.name}: CPU share", 100 * share, "% core", baseline=100 * raw_share,
                              baseline_name="bare websockets server, same frames", better="lower", goal=s.goal, notes=notes))
        figures.append(Figure("sim", f"{s.name}: frames per CPU-second", rate / max(share, 1e-9), "frames/s",
                              baseline=raw_rate / max(raw_share, 1e-9), baseline_name="bare websockets server",
                              better="higher", notes=notes))
    return figures
