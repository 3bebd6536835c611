"""``klinestore dataqual``: the latest DataQual scores and why, or their history as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from klinestore.queries.api import default_data_dir
from klinestore.queries.charts import dataqual_chart
from klinestore.queries.inventory import require_data_dir
from klinestore.queries.status import latest_dataqual
from klinestore.storage.fsguard import check_output_path

HELP = "show the latest DataQual score per symbol and its reasons, or plot the scores over time"
DESCRIPTION = """\
DataQual is the service's data-quality score per symbol, in [0, 1], with the reasons for
every penalty (missing streams, stale data, open gaps, reconciliation mismatches, order-book
resyncs). Without --plot: a table of the newest score of each symbol. With --plot FILE.png:
the scores over time, open gaps shaded and reconnects marked. Reads the tables the service
publishes (<data-dir>/tables/), so it works from any process while the service runs."""
EXAMPLES = """\
  klinestore dataqual
  klinestore dataqual --symbol BTCUSDT --plot btc-dataqual.png
  klinestore dataqual --data-dir /srv/klinestore --plot dataqual.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbol", help="one symbol (default: all)")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the scores over time to this PNG")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: storage.data_dir of the config)")


def run(args: argparse.Namespace) -> int:
    data_dir = require_data_dir(default_data_dir(args.data_dir))
    if args.plot is not None:
        check_output_path(args.plot, data_dir)
        drawn = dataqual_chart(args.plot, symbol=args.symbol, data_dir=data_dir)
        print(f"wrote {args.plot}: {drawn['scores']:,} scores, {drawn['gaps']} gaps, {drawn['reconnects']} reconnects")
        return 0
    rows = latest_dataqual(data_dir, args.symbol)
    if not rows:
        print("no DataQual scores recorded yet (the service publishes them every jobs.publish_interval seconds)")
        return 0
    table = Table(title=f"DataQual, newest score per symbol ({data_dir})", title_justify="left")
    for col in ("symbol", "score", "missing streams", "gaps", "reasons", "at (UTC)"):
        table.add_column(col, justify="right" if col in ("score", "missing streams", "gaps") else "left")
    for r in rows:
        style = "green" if r["score"] is not None and r["score"] >= 0.9 else "yellow"
        table.add_row(r["symbol"], f"[{style}]{r['score']:.3f}[/]", str(r["missing_streams"]), str(r["gaps"]),
                      r["reasons"] or "", r["ts"] or "")
    Console().print(table)
    return 0
