"""Run every benchmark: ``python -m bench [--quick] [--only AREA] [--json PATH] [--markdown PATH]``.

``--markdown BENCHMARKS.md`` rewrites the figures table between the file's ``bench-figures``
markers (the prose around it is kept), so the record always comes from one run of one command.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import signal
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
    parser.add_argument("--markdown", type=Path, help="also write the figures as a Markdown table into this file "
                                                      "(between its bench-figures markers)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)  # unwind, so each benchmark's finally stops its simulator
    console = Console()
    console.print(f"[bold]machine[/]: {machine()}")
    figures: list[Figure] = []
    run_started = time.perf_counter()
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
        table.add_row(*cells(f))
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "figures": [f.to_dict() for f in figures]}, indent=2))
    if args.markdown:
        command = "python -m bench" + "".join(f" --only {a}" for a in args.only or []) + (" --quick" if args.quick else "")
        splice_markdown(args.markdown, markdown_table(figures, command, time.perf_counter() - run_started))
    return 0


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def cells(f: Figure) -> list[str]:
    """One figure's row: area, figure, value, baseline, ratio, goal."""
    base = f"{f.baseline:,.4g} {f.unit} ({f.baseline_name})" if f.baseline is not None else "-"
    ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
    return [f.area, f.name, f"{f.value:,.4g} {f.unit}", base, ratio, f.goal]


MARK_START = "<!-- bench-figures: written by `python -m bench --markdown BENCHMARKS.md`; do not edit -->\n"
MARK_END = "<!-- bench-figures: end -->\n"


def markdown_table(figures: list[Figure], command: str, seconds: float) -> str:
    """The figures of one run as Markdown, with the command, machine and date that made them."""
    lines = [f"`{command}` on {time.strftime('%Y-%m-%d', time.gmtime())}, {machine()}; the whole run took "
             f"{seconds / 60:.0f} min.\n\n",
             "| area | figure | value | baseline (same run) | ratio | goal |\n| --- | --- | --- | --- | --- | --- |\n"]
    for f in figures:
        lines.append("| " + " | ".join(c.replace("|", "\\|") or "-" for c in cells(f)) + " |\n")
    return "".join(lines)


def splice_markdown(path: Path, table: str) -> None:
    """Put ``table`` between the markers of ``path`` (or write a file of just the table)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + MARK_START + table + MARK_END + rest.split(MARK_END, 1)[1]
    else:
        text = text + ("\n" if text else "") + MARK_START + table + MARK_END
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
