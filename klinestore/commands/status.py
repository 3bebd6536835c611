"""``klinestore status``: the service's health and the dataset's state, for people or scripts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from klinestore.config import load_config
from queries.status import exit_code, read_status
from queries.status_view import render

HELP = "show the service's health (connections, streams, DataQual, readiness, storage, REST ledger, alerts)"
DESCRIPTION = """\
Report on a data directory from any process, while the service runs or not: connections and
their states, streams and missing streams, counters (messages, rejects by reason,
reconnects), ready/warming_up per symbol and timeframe, DataQual per symbol, last flush and
WAL depth, bars stored per interval (months, files, newest bar), the REST API ledger, and
alerts. Sources: <data-dir>/status.json (rewritten by the service every
jobs.status_interval seconds), the published DataQual tables and the files themselves.
A status.json older than 3 status intervals is reported as stale (service not running?).

--json prints the whole report as one JSON object (the service's own status.json is under
"status_json"), for scripts.

Exit codes: 0 the service is running and nothing is wrong; 3 no running service (no
status.json, stale, or stopped); 4 running with alerts; 1 error."""
EXAMPLES = """\
  klinestore status
  klinestore status --data-dir /srv/klinestore --json | jq '.alerts'
  klinestore status --json > /dev/null || echo "klinestore needs attention"
"""
WIDE = 140


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data directory (default: storage.data_dir of the config)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    config = load_config()
    report = read_status(args.data_dir or config.data_dir, dataqual_min=config.alerts.dataqual_min)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=WIDE)  # piped or logged: do not squeeze the tables into 80 columns
        console.print(render(report))
    return exit_code(report)
