"""``klinestore sql``: read-only SQL over the bars and the DataQual tables (one query or a prompt)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from klinestore.queries.api import default_data_dir
from klinestore.queries.errors import QueryError
from klinestore.queries.output import DEFAULT_MAX_ROWS, FORMATS, write_result
from klinestore.queries.repl import Repl
from klinestore.queries.sql import connect, execute
from klinestore.storage.fsguard import check_output_path

HELP = "run read-only SQL over the bars and DataQual tables (DuckDB), or open a SQL prompt"
DESCRIPTION = """\
Query the dataset with DuckDB SQL. Views: bars (every interval), bars_1m, bars_5m, bars_15m,
bars_1h, bars_4h (always there) and bars_<interval> for any other stored interval (bars_1d...;
the calendar month is bars_1mo), plus the service's tables dataqual, reconciliations, gaps,
connection_events and api_calls. Bar columns: symbol, interval, open_time, close_time, open,
high, low, close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume,
is_complete, source. Times are UTC timestamps (the session time zone is UTC).

The session is read-only: nothing a query does can change the data directory or write a
file (COPY, ATTACH, EXPORT, INSTALL/LOAD are refused; only the dataset can be read). Write
results with --out. It reads Parquet and takes no lock, so it works while the service runs
and sees bars within one flush interval (storage.flush_interval) of their close.

Without a query, a prompt opens (history kept in ~/.klinestore_history): end statements
with ';', and use .tables, .schema VIEW, .format FMT, .maxrows N, .help and .quit.
A failing query prints one line on stderr and exits 1."""
EXAMPLES = """\
  klinestore sql "SELECT symbol, count(*) AS bars, max(open_time) FROM bars_1m GROUP BY symbol"
  klinestore sql "SELECT * FROM bars_1h WHERE symbol = 'BTCUSDT' ORDER BY open_time DESC LIMIT 24"
  klinestore sql "SELECT * FROM bars_5m WHERE open_time >= '2024-01-01'" --format csv > btc.csv
  klinestore sql "SELECT * FROM dataqual ORDER BY ts DESC LIMIT 20" --format json
  klinestore sql "SELECT * FROM bars WHERE interval = '4h'" --out bars_4h.parquet
  klinestore sql --data-dir /srv/klinestore          # interactive prompt
"""

_EXTENSIONS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet", ".txt": "table"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", nargs="?", help="SQL to run (omit for the interactive prompt)")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: storage.data_dir of the config)")
    parser.add_argument(
        "--format", choices=FORMATS, help="output format (default: table, or from the --out extension)"
    )
    parser.add_argument("--out", type=Path, help="write the result to this file (written atomically)")
    parser.add_argument(
        "--max-rows", type=int, default=DEFAULT_MAX_ROWS, metavar="N",
        help=f"rows shown by the table format (default {DEFAULT_MAX_ROWS}; csv/json/parquet write all)",
    )


def run(args: argparse.Namespace) -> int:
    data_dir = default_data_dir(args.data_dir)
    if not data_dir.is_dir():
        raise QueryError(f"no data directory at {data_dir} (give --data-dir or set KLINESTORE_DATA_DIR)")
    if args.out is not None:
        check_output_path(args.out, data_dir)
    fmt = args.format or (_EXTENSIONS.get(args.out.suffix.lower(), "table") if args.out else "table")
    con = connect(data_dir)
    try:
        if args.query is None:
            return Repl(con, fmt=fmt, max_rows=args.max_rows).run()
        rows = write_result(execute(con, args.query), fmt, args.out, max_rows=args.max_rows)
        if args.out is not None:
            print(f"wrote {rows:,} rows to {args.out}", file=sys.stderr)
        return 0
    finally:
        con.close()
