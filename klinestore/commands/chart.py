"""``klinestore chart``: a candlestick PNG with volume, gaps marked, UTC axis."""

from __future__ import annotations

import argparse
from pathlib import Path

from klinestore.commands import add_bar_range, add_market
from klinestore.queries.api import default_data_dir
from klinestore.queries.charts import candles_chart
from klinestore.storage.fsguard import check_output_path

HELP = "draw candles with volume for one symbol and range as a PNG (gaps marked)"
DESCRIPTION = """\
Draw the bars of one symbol and interval with open times in [--start, --end) (end exclusive;
ISO dates/datetimes in UTC or epoch ms) as candles over a volume panel, on a UTC time axis.
Missing bars are shaded red and incomplete resampled bars orange, and the title counts them,
so a hole in the data never passes for a quiet market. Renders headless (Agg); the PNG is
written atomically. At most 20,000 candles: use a longer interval for long ranges.

Without --start and --end it draws the last stored day (UTC) of the series, at least its
last 120 bars for long intervals; with only one of them, a day from it. --market spot draws
what `klinestore import --market spot` stored.

Exit 1, with one line naming the mistake, for a data directory that does not exist, a
symbol or interval with no stored bar, a reversed range, or a range without any bar."""
EXAMPLES = """\
  klinestore chart --symbol BTCUSDT --interval 1h --start 2024-01-01 --end 2024-01-08 --out btc-1h.png
  klinestore chart --symbol ETHUSDT --interval 1m --start 2024-03-01T12:00 --end 2024-03-01T16:00 --out eth.png
  klinestore chart --symbol BTCUSDT --interval 1m --out btc-last-day.png         # the last stored day
  klinestore chart --market spot --symbol BTCUSDT --interval 15m --start 2023-01-01 --end 2023-01-08 --out spot.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bar_range(parser, range_required=False)
    add_market(parser)
    parser.add_argument("--out", required=True, type=Path, help="PNG file to write")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: storage.data_dir of the config)")


def run(args: argparse.Namespace) -> int:
    check_output_path(args.out, default_data_dir(args.data_dir))
    drawn = candles_chart(args.symbol, args.interval, args.start, args.end, args.out, data_dir=args.data_dir,
                          market=args.market)
    plural = "s" if drawn["gaps"] != 1 else ""
    gaps = f", {drawn['missing']:,} missing bars in {drawn['gaps']} gap{plural} marked" if drawn["gaps"] else ""
    span = f"{args.symbol.upper()} {args.interval} [{drawn['start']}, {drawn['end']})"
    print(f"wrote {args.out}: {drawn['bars']:,} candles of {span}{gaps}")
    return 0
