"""``klinestore compact``: merge small Parquet files so the dataset's file count stays bounded."""

from __future__ import annotations

import argparse
from pathlib import Path

from klinestore.config import load_config
from klinestore.queries.inventory import require_data_dir
from klinestore.storage.maintenance import compact_all

HELP = "merge the dataset's small Parquet files (safe while the service runs)"
DESCRIPTION = """\
Compact the dataset: in each partition, full generations of small files are merged, and a
closed month (a later month exists) becomes one file per writer. Files of a shard whose
service is running are left to that service (it compacts them itself); the importer's files
and those of stopped shards are compacted here. Killed at any point, a compaction loses and
duplicates nothing: the next start finishes or undoes it."""
EXAMPLES = """\
  klinestore compact
  klinestore compact --data-dir /srv/klinestore
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data directory (default: storage.data_dir of the config)")


def run(args: argparse.Namespace) -> int:
    config = load_config()
    data_dir = require_data_dir(args.data_dir or config.data_dir)
    report, skipped = compact_all(data_dir, config.storage)
    for line in report.details:
        print(line)
    print(
        f"compacted {data_dir}: {report.merged_files} files merged into {report.written_files} "
        f"({report.rows:,} rows), {report.deleted_files} retired files deleted, "
        f"at most {report.max_files} files per partition and writer"
    )
    if skipped:
        print(f"left to their running services: {', '.join(skipped)}")
    return 0
