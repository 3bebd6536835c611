"""``klinestore status``: the service's health and the dataset's state, for people or scripts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from klinestore.commands import add_market
from klinestore.config import load_config
from klinestore.queries.status import read_status, status_files, worst_exit_code
from klinestore.queries.status_view import render

HELP = "show the service's health (connections, streams, DataQual, readiness, storage, REST ledger, alerts)"
DESCRIPTION = """\
Report on a data directory from any process, while the service runs or not: connections and
their states, streams and missing streams, counters (messages, rejects by reason,
reconnects), ready/warming_up per symbol and timeframe, DataQual per symbol, last flush and
WAL depth, bars stored per interval (partitions, files, newest bar), the REST API ledger, and
alerts. Sources: <data-dir>/status.json (rewritten by the service every
jobs.status_interval seconds), the published DataQual tables and the files themselves.
A status.json older than 3 status intervals is reported as stale (service not running?);
one whose process (pid, on this host) no longer exists is reported as stopped, with the time
of its last snapshot (a service killed with kill -9 or crashed). --market spot shows the
spot dataset that `klinestore import --market spot` stored in the storage table.

--json prints the whole report as one JSON object (the service's own status.json is under
"status_json"), for scripts.

Sharded ingest (several `klinestore run` with sharding.num_shards > 1 in one data
directory): each shard writes status-sNNNN.json. --shard N reports on shard N; without it,
a data directory with shard files and no status.json reports on every shard (JSON: one
report per shard under "shards"; the exit code is the worst of them).

Exit codes: 0 the service is running and nothing is wrong; 3 no running service (no
status.json, stale, stopped, or its process is gone); 4 running with alerts; 1 error (a
data directory that does not exist)."""
EXAMPLES = """\
  klinestore status
  klinestore status --data-dir /srv/klinestore --json | jq '.alerts'
  klinestore status --json > /dev/null || echo "klinestore needs attention"
  klinestore status --shard 1                       # one shard of a sharded ingest
  klinestore status --market spot                   # the spot dataset in the storage table
"""
WIDE = 140


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data directory (default: storage.data_dir of the config)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_market(parser)
    parser.add_argument("--shard", type=int, metavar="N", help="report on ingest shard N (status-sNNNN.json)")


def run(args: argparse.Namespace) -> int:
    config = load_config()
    data_dir = args.data_dir or config.data_dir
    shards: list[int | None] = [args.shard]
    if args.shard is None:
        found = status_files(data_dir) if Path(data_dir).is_dir() else {}
        if None not in found and found:
            shards = sorted(n for n in found if n is not None)
    reports = [read_status(data_dir, dataqual_min=config.alerts.dataqual_min, shard=n, market=args.market)
               for n in shards]
    if args.json:
        whole = reports[0] if shards == [args.shard] else {"shards": {str(r["shard"]): r for r in reports}}
        print(json.dumps(whole, indent=2, default=str))
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=WIDE)  # piped or logged: do not squeeze the tables into 80 columns
        for report in reports:
            if "shard" in report:
                console.rule(f"shard {report['shard']}")
            console.print(render(report))
    return worst_exit_code(reports)
