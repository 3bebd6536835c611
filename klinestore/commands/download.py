"""``klinestore download``: the exchange's daily and monthly archives, verified, then imported."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import date, datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from klinestore.config import load_config
from klinestore.core.errors import ConfigError
from klinestore.core.symbols import check_symbols
from klinestore.ingest.archives import DEFAULT_PARALLEL, Fetched, download
from klinestore.ingest.protocol.archive import DEFAULT_ARCHIVE_URL, KINDS, ArchiveRef, plan
from klinestore.storage import find_gaps, import_all

HELP = "download the exchange's archives (klines, aggTrades, mark/index klines, funding; checksums verified) and import them"
DESCRIPTION = f"""\
Fetch the exchange's archives for every symbol, interval and day in [--start, --end) (dates,
UTC, --end exclusive) from its archive host ({DEFAULT_ARCHIVE_URL}, or --archive-url):
a whole calendar month as one monthly archive, other days as daily ones. Each archive's
.CHECKSUM (sha256) is verified before anything of it is kept; a file that does not match is
refused, named with both digests, and nothing of it is stored (exit 1). Verified archives
are imported like `klinestore import` (1m bars are also resampled).

Resumable: archives are kept, verified, under <data-dir>/downloads/ and a run after an
interruption fetches only what is missing; a day or month whose bars are all stored already
is skipped without a request. --parallel archives are fetched at once (default
{DEFAULT_PARALLEL}). Days not over yet are not published by the host and are left out. The
archive host is not the API: downloads cost no REST weight, which makes this the way to
fill gaps in WebSocket-only mode.

--data klines (default), aggTrades (1m bars are built from the trades; the trades are kept
too with storage.persist_aggtrades), markPriceKlines / indexPriceKlines (the mark and index
bars, --intervals as for klines) and fundingRate (funding events, by month only: the host
publishes a month's file after the month ends).
Exit codes: 0 done, 1 an error (bad argument, an archive refused, the host unreachable)."""
EXAMPLES = """\
  klinestore download --symbols BTCUSDT,ETHUSDT --intervals 1m --start 2024-01-01 --end 2024-02-01
  klinestore download --symbols BTCUSDT --intervals 1m,1h --start 2024-03-01 --end 2024-03-08 --data-dir /srv/ks
  klinestore download --symbols BTCUSDT --intervals 1m --start 2024-05-01 --end 2024-05-02 --data aggTrades
  klinestore download --symbols BTCUSDT --intervals 1m --start 2024-01-01 --end 2024-02-01 \
      --data markPriceKlines,indexPriceKlines,fundingRate
  klinestore download --symbols BTCUSDT --intervals 1m --start 2024-01-01 --end 2024-01-03 \\
      --archive-url http://127.0.0.1:9001                # the simulator's archive (klinestore sim)
"""
#: Which dataset a kind of archive fills (what ``stored_complete`` checks).
_DATASET = {"klines": "um", "aggTrades": "um", "markPriceKlines": "mark", "indexPriceKlines": "index"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbols", required=True, metavar="A,B", help="symbols, comma-separated")
    parser.add_argument("--intervals", default="1m", metavar="1m[,5m...]", help="kline intervals (default 1m)")
    parser.add_argument("--start", required=True, help="first day (UTC), e.g. 2024-01-01")
    parser.add_argument("--end", required=True, help="day after the last one (exclusive), e.g. 2024-02-01")
    parser.add_argument("--data", default="klines", metavar="KIND[,KIND]",
                        help=f"archive kinds: {', '.join(KINDS)} (default klines)")
    parser.add_argument("--archive-url", default=DEFAULT_ARCHIVE_URL, metavar="URL",
                        help=f"archive host (default {DEFAULT_ARCHIVE_URL})")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: storage.data_dir of the config)")
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N",
                        help=f"archives fetched at once (default {DEFAULT_PARALLEL})")


def _day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(flag, f"expected a date like 2024-01-31, got {text!r}") from None


def _kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError("--data", f"unknown kind {kind!r}; expected {', '.join(KINDS)}")
    return kinds or ["klines"]


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)


def stored_complete(data_dir: Path, ref: ArchiveRef) -> bool:
    """Whether every bar the archive would bring is stored already (complete, not resampled from gaps)."""
    interval = ref.interval or "1m"
    if not data_dir.is_dir() or ref.kind not in _DATASET:  # funding: too few rows to be worth a check
        return False
    return not find_gaps(data_dir, ref.symbol, interval, _ms(ref.day), _ms(ref.end), complete_only=True,
                         market=_DATASET[ref.kind])


def run(args: argparse.Namespace) -> int:
    if getattr(args, "verbose", 0) < 2:  # one INFO line per request is noise; -vv shows them
        logging.getLogger("httpx").setLevel(logging.WARNING)
    config = load_config()
    data_dir = Path(args.data_dir or config.data_dir)
    start, end = _day(args.start, "--start"), _day(args.end, "--end")
    if end <= start:
        raise ConfigError("--end", f"{end} is not after --start {start} (the range is [start, end), end exclusive)")
    if args.parallel < 1:
        raise ConfigError("--parallel", "must be at least 1")
    symbols = list(check_symbols(args.symbols))
    intervals = [i.strip() for i in args.intervals.split(",") if i.strip()]
    today = datetime.now(timezone.utc).date()
    refs = plan(symbols, intervals, _kinds(args.data), start, end, today)
    if not refs:
        raise ConfigError("--start", f"no archive can exist yet for days from {start} (the host publishes a day after it "
                                     "ends; fundingRate: a month's after the month ends)")
    wanted = [r for r in refs if not stored_complete(data_dir, r)]
    results = _fetch(wanted, args.archive_url, data_dir / "downloads", args.parallel)
    usable = [f for f in results if f.outcome in ("downloaded", "present")]
    corrupt = [f for f in results if f.outcome == "corrupt"]
    missing = [f for f in results if f.outcome == "missing"]
    for f in missing:
        print(f"not published: {f.detail}", file=sys.stderr)
    imported = ""
    if usable:
        report = import_all([f.path for f in usable], data_dir, config.storage)
        imported = (f"; imported {report.rows:,} bars ({report.written:,} written, {report.unchanged:,} unchanged, "
                    f"{report.resampled:,} resampled) into {data_dir}")
    downloaded = sum(1 for f in usable if f.outcome == "downloaded")
    print(f"{len(refs)} archives for {len(symbols)} symbols: {len(refs) - len(wanted)} already stored complete, "
          f"{downloaded} downloaded, {len(usable) - downloaded} verified earlier, {len(missing)} not published"
          f"{', ' + str(len(corrupt)) + ' refused' if corrupt else ''}{imported}")
    for f in corrupt:
        print(f"klinestore download: error: {f.detail}; nothing of {f.ref.name} was stored", file=sys.stderr)
    return 1 if corrupt else 0


def _fetch(refs: list[ArchiveRef], url: str, dest: Path, parallel: int) -> list[Fetched]:
    if not refs:
        return []
    with Progress(
        TextColumn("[bold]download[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeRemainingColumn(), console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("", total=len(refs))
        return asyncio.run(download(
            refs, url, dest, parallel=parallel,
            progress=lambda f: progress.update(task, advance=1, description=f.ref.name),
        ))
