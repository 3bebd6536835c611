"""``klinestore run`` at the seeds' scale: 200 and 1000 symbols, every default stream, at real speed.

For each size one simulator subprocess (``--speed 1``: klines every 250 ms, depth at 500 ms,
aggTrade by activity, markPrice every second) feeds, in turn, interleaved and the same number
of tries:

* ``klinestore run`` as a process with the default config (run from an empty directory, so no
  config file is read) and only ``--symbols``, the URLs, ``--data-dir`` and ``--for``;
* the baseline: a bare websockets receiver of the same streams, over the same number of
  connections (SUBSCRIBE in chunks of 100, 200 streams a connection), that counts frames and
  decodes nothing: the floor any Python ingest pays for the bytes;
* where the ``bench`` extra is installed, cryptofeed's Binance futures feed on the same
  streams (:func:`bench.scale_peers.cryptofeed_receiver`): CPU per message beside ours.

Then the maximum sustainable message rate of the ingest path: a server that writes prebuilt
frames as fast as TCP takes them (:func:`bench.scale_peers.blaster`) feeds klinestore's pool
and dispatcher, and, interleaved, a bare websockets ``recv()`` loop.

CPU time and peak RSS come from ``wait4`` (the whole process life, start-up included, for
both); messages from the final ``status.json`` (klinestore) or the receiver's own count.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Figure, start_json_process, stop_process, subprocess_env

KLINES = ("1m", "5m", "15m", "1h", "4h")
PER_CONNECTION = 200
CHUNK = 100


def streams(symbols: list[str]) -> list[str]:
    """The default config's streams: 5 klines, aggTrade, markPrice@1s, depth@500ms (8 a symbol)."""
    out = []
    for s in symbols:
        low = s.lower()
        out += [f"{low}@kline_{i}" for i in KLINES] + [f"{low}@aggTrade", f"{low}@markPrice@1s", f"{low}@depth@500ms"]
    return out



def _peak_rss_mb(pid: int) -> float | None:
    """The process's own peak RSS (VmHWM), or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reap(proc: subprocess.Popen[str]) -> tuple[float, float]:
    """Wait for ``proc``; (CPU seconds of its whole life, its peak RSS in MB).

    The peak is VmHWM polled until the process exits (the last reading is within 0.1 s of its
    end), not ``ru_maxrss``: Linux carries ru_maxrss across execve, so a child of a large bench
    process would report the parent's peak.
    """
    peak = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime, peak
        peak = max(peak, _peak_rss_mb(proc.pid) or 0.0)
        time.sleep(0.1)


def _run_reading(argv: list[str], cwd: str | Path) -> tuple[str, float, float]:
    """Run ``argv``; (its stdout, CPU seconds, peak RSS MB), VmHWM polled while stdout is read aside."""
    import threading

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=subprocess_env(),
                            cwd=cwd)
    assert proc.stdout is not None
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    cpu, rss = _reap(proc)
    reader.join()
    return "".join(chunks), cpu, rss


def run_klinestore(urls: dict[str, str], symbols: list[str], seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "klinestore", "run", "--symbols", ",".join(symbols), "--ws-url", urls["ws"],
                "--rest-url", urls["rest"], "--data-dir", f"{tmp}/data", "--for", str(seconds)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(),
                                cwd=tmp)
        cpu, rss = _reap(proc)
        status = json.loads(Path(f"{tmp}/data/status.json").read_text())
    counters = status["counters"]
    return {"cpu": cpu, "rss": rss, "messages": counters["messages"], "connections": len(status["connections"]),
            "reconnects": counters["reconnects"], "books_in_sync": status["books_in_sync"],
            "rate_limited": status["rest"]["rate_limited"], "banned": status["rest"]["banned"], "exit": proc.returncode}


def run_bare(urls: dict[str, str], symbols: list[str], seconds: float) -> dict[str, Any]:
    argv = [sys.executable, "-c", "from bench.bench_scale import bare_receiver; bare_receiver()", urls["ws"],
            str(seconds), ",".join(symbols)]
    out, cpu, rss = _run_reading(argv, ROOT)
    got = json.loads(out)
    return {"cpu": cpu, "rss": rss, "messages": got["messages"], "connections": got["connections"],
            "closed": got["closed"]}


def bare_receiver() -> None:
    """The baseline process: subscribe the streams, count frames for ``seconds``, print the count."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    base, seconds, names = sys.argv[1], float(sys.argv[2]), streams(sys.argv[3].split(","))
    market = [s for s in names if "@depth" not in s]
    public = [s for s in names if "@depth" in s]
    groups = [("market", market[i : i + PER_CONNECTION]) for i in range(0, len(market), PER_CONNECTION)]
    groups += [("public", public[i : i + PER_CONNECTION]) for i in range(0, len(public), PER_CONNECTION)]
    count = 0
    stop = time.monotonic() + seconds

    closed = 0

    async def one(route: str, group: list[str]) -> None:
        nonlocal count, closed
        try:
            async with connect(f"{base}/{route}/stream", max_size=None, compression=None) as ws:
                for n, i in enumerate(range(0, len(group), CHUNK)):
                    await ws.send(json.dumps({"method": "SUBSCRIBE", "params": group[i : i + CHUNK], "id": n + 1}))
                    await asyncio.sleep(0.2)  # 5 control messages a second, like klinestore
                while (left := stop - time.monotonic()) > 0:
                    try:
                        await asyncio.wait_for(ws.recv(), left)
                    except TimeoutError:
                        return
                    count += 1
        except ConnectionClosed:
            closed += 1  # the baseline does not reconnect: it counts what it got

    async def main() -> None:
        await asyncio.gather(*(one(r, g) for r, g in groups))

    asyncio.run(main())
    print(json.dumps({"messages": count, "connections": len(groups), "closed": closed}), flush=True)


def run_cryptofeed(urls: dict[str, str], symbols: list[str], seconds: float) -> dict[str, Any]:
    argv = [sys.executable, "-c", "from bench.scale_peers import cryptofeed_receiver; cryptofeed_receiver()",
            urls["ws"], urls["rest"], str(seconds), ",".join(symbols)]
    with tempfile.TemporaryDirectory() as tmp:  # cryptofeed may write a log file in the working directory
        out, cpu, rss = _run_reading(argv, tmp)
    got = json.loads(out)
    return {"cpu": cpu, "rss": rss, "messages": got["messages"], "connections": got["connections"],
            "callbacks": got["callbacks"]}


def have_cryptofeed() -> bool:
    import importlib.util

    return importlib.util.find_spec("cryptofeed") is not None


def _simulator(symbols: list[str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    argv = [sys.executable, "-m", "klinestore", "-q", "sim", "--port", "0", "--seed", "7", "--speed", "1",
            "--history-minutes", "60", "--symbols", ",".join(symbols)]
    return start_json_process(argv)



def measure(n: int, seconds: float, tries: int, *, peers: bool = True
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    symbols = [f"S{i:04d}USDT" for i in range(n)]
    sim, urls = _simulator(symbols)
    ours: list[dict[str, Any]] = []
    bare: list[dict[str, Any]] = []
    cf: list[dict[str, Any]] = []
    try:
        for _ in range(tries):  # interleaved: the machine's load hits all alike
            ours.append(run_klinestore(urls, symbols, seconds))
            bare.append(run_bare(urls, symbols, seconds))
            if peers and have_cryptofeed():
                cf.append(run_cryptofeed(urls, symbols, seconds))
    finally:
        stop_process(sim)
    return ours, bare, cf


def _best(runs: list[dict[str, Any]], key: str) -> float:
    return min(r[key] for r in runs)


def figures(n: int, seconds: float, ours: list[dict[str, Any]], bare: list[dict[str, Any]],
            cf: list[dict[str, Any]] | None = None) -> list[Figure]:
    def us_per_msg(r: dict[str, Any]) -> float:
        return 1e6 * r["cpu"] / max(1, r["messages"])

    notes = {"seconds": seconds, "tries": len(ours), "connections": ours[0]["connections"],
             "reconnects": [r["reconnects"] for r in ours], "books_in_sync": [r["books_in_sync"] for r in ours],
             "rate_limited": sum(r["rate_limited"] for r in ours), "banned": sum(r["banned"] for r in ours),
             "exit": [r["exit"] for r in ours], "bare_connections": bare[0]["connections"],
             "bare_closed": [r["closed"] for r in bare]}
    label = f"klinestore run, {n} symbols ({8 * n} streams), default config"
    peer: list[Figure] = []
    if cf:
        peer.append(Figure("scale", f"{label}: CPU per message vs cryptofeed", min(map(us_per_msg, ours)), "us/msg",
                           min(map(us_per_msg, cf)), "cryptofeed 2.4.1 BinanceFutures (uvloop)", better="lower",
                           goal="at or below cryptofeed", notes={
                               "cryptofeed_messages": [r["messages"] for r in cf],
                               "cryptofeed_connections": cf[0]["connections"],
                               "cryptofeed_rss_mb": [round(r["rss"]) for r in cf],
                               "cryptofeed_callbacks": cf[0]["callbacks"]}))
    return peer + [
        Figure("scale", f"{label}: CPU per message", min(map(us_per_msg, ours)), "us/msg",
               min(map(us_per_msg, bare)), "bare websockets receiver", better="lower", notes=notes),
        Figure("scale", f"{label}: peak RSS", _best(ours, "rss"), "MB", _best(bare, "rss"),
               "bare websockets receiver", better="lower", goal="<= 300 MB at 200 symbols"),
        Figure("scale", f"{label}: messages/s", max(r["messages"] for r in ours) / seconds, "msg/s",
               max(r["messages"] for r in bare) / seconds, "bare websockets receiver"),
    ]


def rate(n: int, seconds: float, tries: int) -> list[Figure]:
    """The ingest path's maximum message rate against a sender that is not the bottleneck."""
    symbols = [f"S{i:04d}USDT" for i in range(n)]
    blast, urls = start_json_process([sys.executable, "-c", "from bench.scale_peers import blaster; blaster()",
                                      ",".join(symbols)])
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "bare": []}
    try:
        for _ in range(tries):  # interleaved
            for kind in runs:
                argv = [sys.executable, "-c", "from bench.scale_peers import rate_receiver; rate_receiver()", kind,
                        urls["ws"], str(seconds), ",".join(symbols)]
                out = subprocess.run(argv, capture_output=True, text=True, env=subprocess_env(), cwd=ROOT, check=True,
                                     timeout=seconds + 60)
                runs[kind].append(json.loads(out.stdout))
    finally:
        stop_process(blast)
    ours, bare = (max(runs[k], key=lambda r: r["messages"]) for k in ("ours", "bare"))
    label = f"ingest path (pool, connection, dispatcher, state), one connection, {6 * n} streams"
    notes = {"seconds": seconds, "tries": tries, "ours": runs["ours"], "bare": runs["bare"]}
    return [
        Figure("scale", f"{label}: max message rate", ours["messages"] / seconds, "msg/s",
               bare["messages"] / seconds, "bare websockets recv() loop", notes=notes),
        Figure("scale", f"{label}: CPU per message at max rate", 1e6 * ours["cpu"] / ours["messages"], "us/msg",
               1e6 * bare["cpu"] / bare["messages"], "bare websockets recv() loop", better="lower"),
    ]


def run(quick: bool) -> list[Figure]:
    sizes, seconds, tries = ((50,), 20.0, 1) if quick else ((200, 1000), 150.0, 2)
    out: list[Figure] = []
    for n in sizes:
        ours, bare, cf = measure(n, seconds, tries)
        out += figures(n, seconds, ours, bare, cf)
    out += rate(100, 5.0 if quick else 20.0, 1 if quick else 3)
    return out


def main() -> None:
    """One size alone: ``python -m bench.bench_scale --symbols 200 --seconds 150 --tries 1`` (JSON out);
    ``--rate`` for the maximum message rate alone."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.bench_scale", description=main.__doc__)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--tries", type=int, default=1)
    parser.add_argument("--no-peers", action="store_true", help="klinestore and the bare receiver only")
    parser.add_argument("--rate", action="store_true", help="only the maximum message rate (--symbols, --seconds)")
    args = parser.parse_args()
    if args.rate:
        print(json.dumps([f.to_dict() for f in rate(args.symbols, args.seconds, args.tries)], indent=1))
        return
    ours, bare, cf = measure(args.symbols, args.seconds, args.tries, peers=not args.no_peers)
    print(json.dumps({"ours": ours, "bare": bare, "cryptofeed": cf,
                      "figures": [f.to_dict() for f in figures(args.symbols, args.seconds, ours, bare, cf)]}, indent=1))


if __name__ == "__main__":
    main()
