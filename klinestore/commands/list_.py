"""``klinestore list``: the inventory, one row per stored symbol and interval."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from klinestore.queries.api import default_data_dir
from klinestore.queries.inventory import inventory
from klinestore.storage import Dataset

HELP = "list what is stored: per symbol and interval the first and last bar, bar count and missing bars"
DESCRIPTION = """\
One row per stored symbol and interval: symbol, interval, first and last (open times of the
first and last stored bar, ISO UTC), bars (how many are stored) and missing (bars absent
between first and last; 0 means the series has no hole). Read from the Parquet footers where
they settle the count, so it stays fast on a large store; bars still in the WAL show up after
the next flush (storage.flush_interval), as in `klinestore sql`.

--market spot lists what `klinestore import --market spot` stored. --format json prints one
JSON array of objects with the same keys, for scripts. Exit 1 when the data directory does
not exist; an empty store prints nothing stored (exit 0)."""
EXAMPLES = """\
  klinestore list
  klinestore list --symbol BTCUSDT --interval 1m
  klinestore list --market spot --data-dir /srv/klinestore
  klinestore list --format json | jq '.[] | select(.missing > 0)'
"""
COLUMNS = ("symbol", "interval", "first", "last", "bars", "missing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data directory (default: storage.data_dir of the config)")
    parser.add_argument("--market", choices=Dataset.MARKETS, default="um",
                        help="um: USD-M futures (default); spot: spot archives imported with --market spot")
    parser.add_argument("--symbol", help="only this symbol")
    parser.add_argument("--interval", help="only this interval")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json")


def run(args: argparse.Namespace) -> int:
    data_dir = default_data_dir(args.data_dir)
    rows = [s.row() for s in inventory(data_dir, market=args.market, symbol=args.symbol, interval=args.interval)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        what = " ".join(x for x in (args.symbol, args.interval) if x)
        print(f"nothing stored{' for ' + what if what else ''} in {data_dir} ({args.market})")
        return 0
    table = Table(title=f"stored bars in {data_dir} ({args.market})", title_justify="left")
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in ("bars", "missing") else "left")
    for row in rows:
        missing = f"[yellow]{row['missing']:,}[/]" if row["missing"] else "0"
        table.add_row(row["symbol"], row["interval"], row["first"], row["last"], f"{row['bars']:,}", missing)
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(table)
    return 0
