"""One module per ``klinestore`` subcommand (see ``klinestore.cli``), and the options they share."""

from __future__ import annotations

import argparse


def add_bar_range(parser: argparse.ArgumentParser, *, range_required: bool = True, interval_required: bool = True) -> None:
    """``--symbol --interval --start --end``: one symbol's bars with open times in [start, end)."""
    parser.add_argument("--symbol", required=True, help="symbol, e.g. BTCUSDT")
    parser.add_argument("--interval", required=interval_required, help="interval, e.g. 1m, 5m, 1h, 4h, 1d")
    parser.add_argument("--start", required=range_required,
                        help="first open time (inclusive): ISO date/datetime or epoch ms")
    parser.add_argument("--end", required=range_required,
                        help="end of the range (exclusive): ISO date/datetime or epoch ms")


def add_market(parser: argparse.ArgumentParser) -> None:
    """``--market um|spot``: the USD-M dataset (default) or what ``import --market spot`` stored."""
    parser.add_argument("--market", choices=("um", "spot"), default="um",
                        help="um: USD-M futures (default, what the service stores); spot: spot archives imported "
                             "with --market spot")
