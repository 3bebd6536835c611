"""``klinestore import``: data.binance.vision kline and aggTrades archives into the dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from klinestore.config import load_config
from klinestore.core.errors import KlinestoreError
from klinestore.storage import SERIES_KINDS, find_archives, import_all, import_archives

HELP = "import Binance archive files (klines, aggTrades, mark/index klines, funding rates; zip or csv)"
DESCRIPTION = """\
Import data.binance.vision archives: kline files <SYM>-<iv>-YYYY-MM[-DD].zip|csv (daily or
monthly, with or without a header, ms or µs timestamps) and aggTrades files
<SYM>-aggTrades-YYYY-MM[-DD].zip|csv, from which 1m bars are built. Directories are searched
recursively. A <file>.CHECKSUM beside a file is verified. The symbol and interval come from
the file name unless --symbol/--interval say otherwise. 1m bars are also resampled into the
configured intervals (storage.resample_intervals).

Every file is validated before anything is published: a bad file stops the import with one
error naming the file and the line, and nothing is written. Importing the same file again
changes nothing. --market spot imports into a separate dataset (bars_spot/).

An archive whose path names its market the way the exchange's archive host does
(.../spot/daily/klines/..., .../futures/um/monthly/...) must match --market: spot bars never
go into the futures dataset by mistake, nor the reverse (COIN-M, futures/cm, is refused).
USD-M series: markPriceKlines and indexPriceKlines archives (the kline layout) go to the mark
and index bars, fundingRate archives (<SYM>-fundingRate-YYYY-MM.zip) to the funding events
(without a mark price: the archive has none, so events already stored keep theirs), each
recognised by its path as the archive host lays it out (.../markPriceKlines/BTCUSDT/1m/...)
or named with --series. aggTrades archives are also kept as trades (agg_trades) when
storage.persist_aggtrades is on.

Exit 1 with one line when a path does not exist, no archive is found, or a market does not
match."""
EXAMPLES = """\
  klinestore import ~/binance/BTCUSDT-1m-2024-01-01.zip
  klinestore import ~/binance/futures/um/monthly/klines/ --data-dir /srv/klinestore
  klinestore import ETHUSDT-aggTrades-2024-03-15.zip
  klinestore import --market spot --symbol BTCUSDT --interval 1m export.csv
  klinestore import ~/binance/futures/um/monthly/fundingRate/BTCUSDT/
  klinestore import --series mark BTCUSDT-1m-2024-01-01.zip        # a markPriceKlines file
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="archive files or directories")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: storage.data_dir of the config)")
    parser.add_argument("--market", choices=("um", "spot"), default="um", help="USD-M futures (default) or spot")
    parser.add_argument("--symbol", help="symbol of every file (default: from each file name)")
    parser.add_argument("--interval", help="kline interval of every file (default: from each file name)")
    parser.add_argument("--series", choices=SERIES_KINDS,
                        help="every file is of this USD-M series (default: from each file's path)")


def run(args: argparse.Namespace) -> int:
    config = load_config()
    data_dir = args.data_dir or config.data_dir
    files = find_archives(list(args.paths))
    if not files:
        raise KlinestoreError(f"no archive found in {', '.join(map(str, args.paths))}: expected .zip or .csv files "
                              "named <SYMBOL>-<interval>-<YYYY-MM[-DD]> or <SYMBOL>-aggTrades-<YYYY-MM[-DD]>")
    check_markets(files, args.market)
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]import[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeRemainingColumn(), console=console, transient=True, disable=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("", total=len(files))
        advance = lambda spec: progress.update(task, advance=1, description=spec.path.name)  # noqa: E731
        if args.market == "um":
            report = import_all(args.paths, data_dir, config.storage, series=args.series, symbol=args.symbol,
                                interval=args.interval, progress=advance)
        elif args.series is not None:
            raise KlinestoreError("--series is a USD-M series; it cannot be imported with --market spot")
        else:
            report = import_archives(args.paths, data_dir, config.storage, market=args.market, symbol=args.symbol,
                                     interval=args.interval, progress=advance)
    print(
        f"imported {report.files} files into {data_dir}: {report.rows:,} bars read, {report.written:,} written, "
        f"{report.unchanged:,} unchanged, {report.resampled:,} resampled bars "
        f"({report.seconds:.2f} s, {report.rows_per_second:,.0f} bars/s)"
    )
    return 0


#: Path segments after which the exchange's archive host names a market: ``data/spot/daily/...``.
_SPOT_NEXT = {"daily", "monthly", "klines", "aggTrades"}
_NAMES = {"um": "USD-M futures", "spot": "spot", "cm": "COIN-M futures"}


def archive_market(path: Path) -> str | None:
    """The market a path names as the archive host lays it out (``spot``, ``um``, ``cm``), or None."""
    parts = path.absolute().parts
    for here, after in zip(parts, parts[1:]):
        if here == "spot" and after in _SPOT_NEXT:
            return "spot"
        if here == "futures" and after in ("um", "cm"):
            return after
    return None


def check_markets(files: list[Path], market: str) -> None:
    """Refuse an archive whose path names another market than ``--market``."""
    for path in files:
        named = archive_market(path)
        if named is not None and named != market:
            fix = f"; import it with --market {named}" if named in ("um", "spot") else " (not supported)"
            raise KlinestoreError(f"{path} is a {_NAMES[named]} archive (its path says so), not "
                                  f"{_NAMES[market]} (--market {market}){fix}")
