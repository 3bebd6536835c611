"""``klinestore export``: bars for backtests (Parquet, CSV, Binance CSV, freqtrade, backtesting.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from klinestore.commands import add_bar_range, add_market
from klinestore.queries.api import default_data_dir
from klinestore.queries.errors import ExportError, GapError
from klinestore.queries.export import FORMATS, ON_GAP, export
from klinestore.queries.export_series import WHATS, export_series
from klinestore.queries.inventory import require_data_dir
from klinestore.storage.fsguard import check_output_path

HELP = "export one symbol's bars for a backtest (parquet, csv, binance, freqtrade, backtesting)"
DESCRIPTION = """\
Export the bars of one symbol and interval with open times in [--start, --end): the end is
exclusive, so --start 2024-01-01 --end 2024-02-01 is exactly January and consecutive ranges
never overlap. Times are ISO dates or datetimes (UTC unless they carry an offset) or epoch
milliseconds. A range reaching past the last closed bar ends there.

Formats:
  parquet      the 15 bar columns (symbol ... source), times as UTC timestamps
  csv          the same columns with a header, ISO UTC times, shortest exact decimals
  binance      data.binance.vision's USD-M kline CSV: header line, 12 columns, ms times
  freqtrade    OUT is freqtrade's data directory (e.g. user_data/data/binance): writes
               OUT/futures/BTC_USDT_USDT-1h-futures.feather (date, open, high, low, close, volume)
  backtesting  a Parquet file for backtesting.py: Backtest(pd.read_parquet(OUT), Strategy)

               and, for a USD-M symbol, what a futures backtest loads beside it (when
               stored): OUT/futures/BTC_USDT_USDT-{8h,1h}-mark.feather and
               OUT/futures/BTC_USDT_USDT-{8h,1h}-funding_rate.feather (freqtrade reads them
               at its funding timeframe: 8h up to 2024.x, 1h since)

--what funding|mark|index|aggtrades exports a futures series instead of bars, as parquet or
csv (the columns of its SQL view): funding events, mark or index bars of --interval
(resampled from 1m when that interval is not stored), or the stored aggTrades; --interval
is needed for bars, mark and index only.

--market spot exports what `klinestore import --market spot` stored (freqtrade: the spot
layout, OUT/BTC_USDT-1h.feather).

Missing bars never become NaN rows. --on-gap fail (default) writes nothing and lists the
missing runs (exit 3); drop exports the bars there are and reports the missing ones; fill
writes each missing bar as an empty bar at the previous close (volume 0, trades 0,
source 'fill'). Incomplete resampled bars (a bucket that lacked a minute) count as missing
unless --allow-incomplete. The output is written to a temporary name and renamed.

Exit codes: 0 written, 1 error (bad argument, unreadable data, a data directory that does
not exist, a symbol or interval with no stored bar at all, a reversed range), 3 gaps with
--on-gap fail."""
EXAMPLES = """\
  klinestore export --symbol BTCUSDT --interval 1h --start 2024-01-01 --end 2024-07-01 \\
      --format freqtrade --out user_data/data/binance
  klinestore export --symbol ETHUSDT --interval 5m --start 2024-03-01 --end 2024-04-01 \\
      --format backtesting --out eth-5m.parquet --on-gap fill
  klinestore export --symbol BTCUSDT --interval 1m --start 2024-01-01 --end 2024-01-02 \\
      --format binance --out BTCUSDT-1m-2024-01-01.csv
  klinestore export --symbol BTCUSDT --interval 4h --start 1704067200000 --end 2024-06-30T12:00Z \\
      --format csv --out btc-4h.csv --on-gap drop
  klinestore export --market spot --symbol BTCUSDT --interval 1h --start 2023-01-01 --end 2023-01-08 \\
      --format freqtrade --out user_data/data/binance
  klinestore export --what funding --symbol BTCUSDT --start 2024-01-01 --end 2024-02-01 \\
      --format csv --out btc-funding.csv
"""

EXIT_GAPS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bar_range(parser, interval_required=False)
    parser.add_argument("--what", choices=WHATS, default="bars",
                        help="bars (default), or a futures series: funding, mark, index, aggtrades (parquet or csv)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="output format (see above)")
    parser.add_argument("--out", required=True, type=Path, help="output file (freqtrade: its data directory)")
    parser.add_argument("--on-gap", choices=ON_GAP, default="fail", help="missing bars: fail (default), drop or fill")
    parser.add_argument(
        "--allow-incomplete", action="store_true",
        help="export incomplete resampled bars as they are instead of treating them as missing",
    )
    parser.add_argument("--data-dir", type=Path, help="data directory (default: storage.data_dir of the config)")
    add_market(parser)


def run(args: argparse.Namespace) -> int:
    check_output_path(args.out, default_data_dir(args.data_dir))
    if args.what != "bars":
        if args.market != "um":
            raise ExportError(f"--what {args.what} is a USD-M series; it has no --market {args.market}")
        series = export_series(args.what, args.symbol, args.start, args.end, args.format, args.out,
                               data_dir=require_data_dir(default_data_dir(args.data_dir)), interval=args.interval,
                               allow_incomplete=args.allow_incomplete)
        print(series.summary())
        return 0
    if args.interval is None:
        raise ExportError("--interval is required for bars")
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]export[/]"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
        console=console, transient=True, disable=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("", total=1.0)
        try:
            report = export(
                args.symbol, args.interval, args.start, args.end, args.format, args.out,
                data_dir=args.data_dir, on_gap=args.on_gap, allow_incomplete=args.allow_incomplete, market=args.market,
                progress=lambda done, total: progress.update(task, completed=done / total),
            )
        except GapError as exc:
            progress.stop()
            print(f"klinestore export: error: {exc}", file=sys.stderr)
            return EXIT_GAPS
    print(report.summary())
    return 0
