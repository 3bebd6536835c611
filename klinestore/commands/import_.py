"""``klinestore import``: data.binance.vision kline and aggTrades archives into the dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from klinestore.config import load_config
from klinestore.storage import find_archives, import_archives

HELP = "import Binance archive files (klines or aggTrades; zip or csv) into the dataset"
DESCRIPTION = """\
Import data.binance.vision archives: kline files <SYM>-<iv>-YYYY-MM[-DD].zip|csv (daily or
monthly, with or without a header, ms or µs timestamps) and aggTrades files
<SYM>-aggTrades-YYYY-MM[-DD].zip|csv, from which 1m bars are built. Directories are searched
recursively. A <file>.CHECKSUM beside a file is verified. The symbol and interval come from
the file name unless --symbol/--interval say otherwise. 1m bars are also resampled into the
configured intervals (storage.resample_intervals).

Every file is validated before anything is published: a bad file stops the import with one
error naming the file and the line, and nothing is written. Importing the same file again
changes nothing. --market spot imports into a separate dataset (bars_spot/)."""
EXAMPLES = """\
  klinestore import ~/binance/BTCUSDT-1m-2024-01-01.zip
  klinestore import ~/binance/futures/um/monthly/klines/ --data-dir /srv/klinestore
  klinestore import ETHUSDT-aggTrades-2024-03-15.zip
  klinestore import --market spot --symbol BTCUSDT --interval 1m export.csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="archive files or directories")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: storage.data_dir of the config)")
    parser.add_argument("--market", choices=("um", "spot"), default="um", help="USD-M futures (default) or spot")
    parser.add_argument("--symbol", help="symbol of every file (default: from each file name)")
    parser.add_argument("--interval", help="kline interval of every file (default: from each file name)")


def run(args: argparse.Namespace) -> int:
    config = load_config()
    data_dir = args.data_dir or config.data_dir
    files = find_archives(list(args.paths))
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]import[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeRemainingColumn(), console=console, transient=True, disable=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("", total=len(files))
        report = import_archives(
            args.paths, data_dir, config.storage, market=args.market, symbol=args.symbol, interval=args.interval,
            progress=lambda spec: progress.update(task, advance=1, description=spec.path.name),
        )
    print(
        f"imported {report.files} files into {data_dir}: {report.rows:,} bars read, {report.written:,} written, "
        f"{report.unchanged:,} unchanged, {report.resampled:,} resampled bars "
        f"({report.seconds:.2f} s, {report.rows_per_second:,.0f} bars/s)"
    )
    return 0
