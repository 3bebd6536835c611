"""Where ``klinestore run``'s memory goes: tracemalloc snapshots by module, in a child process.

``python -m bench.scale_memory --symbols 1000 --seconds 90`` starts the simulator at real
speed, runs ``klinestore run`` in a child under tracemalloc (the CLI's own ``main`` in the
main thread; a daemon thread snapshots every ``--every`` seconds), and prints, per snapshot,
VmRSS and VmHWM beside the traced bytes grouped by top-level module (``klinestore.ingest``,
``numpy``, ``msgspec``, ...) and the top allocation sites. tracemalloc costs CPU and some
memory of its own; VmHWM here is not the figure to record (the bench's run without
tracemalloc is), the breakdown is.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _module_of(filename: str) -> str:
    """A traced file's module group: ``klinestore.<layer>.<module>`` for ours, the package otherwise."""
    parts = Path(filename).parts
    root = Path(__file__).resolve().parents[1].parts
    if parts[: len(root)] == root:
        rel = parts[len(root) :]
        return "klinestore." + ".".join(p.removesuffix(".py") for p in rel[:2])
    if "site-packages" in parts:
        i = parts.index("site-packages")
        return parts[i + 1].removesuffix(".py") if len(parts) > i + 1 else filename
    if "python3" in filename and "lib" in parts:
        return "stdlib." + Path(filename).stem
    return filename


def mappings(pid: int | str = "self") -> dict[str, Any]:
    """Resident MB by kind of mapping (/proc/<pid>/smaps): the brk heap, anonymous maps (malloc's
    thread arenas and large blocks, other allocators' pools), files; and the largest anonymous ones."""
    kinds: dict[str, float] = {}
    anon: list[float] = []
    name = ""
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                name = head[5] if len(head) > 5 else ""
            elif head and head[0] == "Rss:":
                mb = int(head[1]) / 1024
                kind = name if name.startswith("[") else ("anon" if not name else "file")
                kinds[kind] = kinds.get(kind, 0.0) + mb
                if kind == "anon":
                    anon.append(mb)
    return {"rss_by_kind_mb": {k: round(v) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "largest_anon_mb": [round(x, 1) for x in sorted(anon, reverse=True)[:8]], "anon_maps": len(anon)}


def snapshot(label: str) -> dict[str, Any]:
    snap = tracemalloc.take_snapshot()
    by_module: dict[str, int] = {}
    for stat in snap.statistics("filename"):
        name = _module_of(stat.traceback[0].filename)
        by_module[name] = by_module.get(name, 0) + stat.size
    lines = snap.statistics("lineno")[:15]
    return {
        "label": label, "rss_mb": round(_status_mb("VmRSS")), "hwm_mb": round(_status_mb("VmHWM")),
        "traced_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 1),
        "by_module_mb": {k: round(v / 2**20, 1) for k, v in sorted(by_module.items(), key=lambda kv: -kv[1])[:20]},
        **mappings(),
        "threads": int(_status_mb("Threads") * 1024),
        "top_lines": [f"{s.traceback[0].filename}:{s.traceback[0].lineno} {s.size / 2**20:.1f} MB ({s.count})"
                      for s in lines],
    }


def child() -> None:
    """argv: out path, every (s), then klinestore's CLI arguments."""
    out, every, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    tracemalloc.start(1)
    snaps = [snapshot("start")]
    started = time.monotonic()

    def watch() -> None:
        while True:
            time.sleep(every)
            snaps.append(snapshot(f"{time.monotonic() - started:.0f}s"))
            Path(out).write_text(json.dumps(snaps, indent=1))

    threading.Thread(target=watch, daemon=True).start()
    from klinestore.cli import main

    try:
        main(argv)
    finally:
        snaps.append(snapshot("end"))
        Path(out).write_text(json.dumps(snaps, indent=1))


def sample(argv: list[str], every: float, cwd: str) -> list[dict[str, Any]]:
    """Run ``argv`` untraced; every ``every`` seconds its VmRSS, VmHWM, threads and RSS by mapping."""
    import subprocess

    from bench.harness import subprocess_env

    proc = subprocess.Popen(argv, env=subprocess_env(), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started, rows = time.monotonic(), []
    while proc.poll() is None:
        time.sleep(every)
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            fields = {line.split(":")[0]: line.split()[1] for line in status if line.startswith(("VmRSS", "VmHWM", "Threads"))}
            rows.append({"t": round(time.monotonic() - started), "rss_mb": int(fields["VmRSS"]) // 1024,
                         "hwm_mb": int(fields["VmHWM"]) // 1024, "threads": int(fields["Threads"]),
                         **mappings(proc.pid)})
        except (OSError, KeyError):
            break
    return rows


def main() -> None:
    import argparse
    import subprocess

    from bench.bench_scale import _simulator
    from bench.harness import stop_process, subprocess_env

    parser = argparse.ArgumentParser(prog="python -m bench.scale_memory", description=__doc__)
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--every", type=float, default=20.0)
    parser.add_argument("--untraced", action="store_true", help="no tracemalloc: resident memory by mapping only")
    parser.add_argument("--config-json", help="a config file's content for klinestore run (JSON), to test a setting")
    args = parser.parse_args()
    symbols = [f"S{i:04d}USDT" for i in range(args.symbols)]
    sim, urls = _simulator(symbols)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = ["run", "--symbols", ",".join(symbols), "--ws-url", urls["ws"], "--rest-url", urls["rest"],
                   "--data-dir", f"{tmp}/data", "--for", str(args.seconds)]
            if args.config_json:
                Path(f"{tmp}/config.json").write_text(args.config_json)
                run += ["--config", f"{tmp}/config.json"]
            if args.untraced:
                print(json.dumps(sample([sys.executable, "-m", "klinestore", *run], args.every, tmp), indent=1))
                return
            out = f"{tmp}/snaps.json"
            argv = [sys.executable, "-c", "from bench.scale_memory import child; child()", out, str(args.every),
                    "run", "--symbols", ",".join(symbols), "--ws-url", urls["ws"], "--rest-url", urls["rest"],
                    "--data-dir", f"{tmp}/data", "--for", str(args.seconds)]
            subprocess.run(argv, env=subprocess_env(), cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=False)
            print(Path(out).read_text())
    finally:
        stop_process(sim)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
