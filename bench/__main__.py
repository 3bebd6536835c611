"""Run every benchmark: ``python -m bench [--quick] [--only AREA] [--json PATH]``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import pkgutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import bench
from bench.harness import Figure


def modules(only: list[str] | None) -> list[str]:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    if only:
        names = [n for n in names if n.removeprefix("bench_") in only]
    return names


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run, not for BENCHMARKS.md)")
    parser.add_argument("--only", action="append", help="run one area (repeatable), e.g. --only storage")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    console = Console()
    console.print(f"[bold]machine[/]: {machine()}")
    figures: list[Figure] = []
    for name in modules(args.only):
        console.print(f"[dim]running {name}...[/]")
        started = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        figures.extend(module.run(args.quick))
        console.print(f"[dim]{name} took {time.perf_counter() - started:.1f} s[/]")
    table = Table(title="klinestore benchmarks (each figure beside its baseline from this run)")
    for col in ("area", "figure", "value", "baseline", "ratio", "goal"):
        table.add_column(col, justify="right" if col in ("value", "ratio") else "left")
    for f in figures:
        base = f"{f.baseline:,.4g} {f.unit} ({f.baseline_name})" if f.baseline is not None else "-"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        table.add_row(f.area, f.name, f"{f.value:,.4g} {f.unit}", base, ratio, f.goal)
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "figures": [f.to_dict() for f in figures]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
