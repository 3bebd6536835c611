"""``klinestore publish``: mirror the dataset's closed months to object storage (any pyarrow filesystem)."""

from __future__ import annotations

import argparse
from pathlib import Path

from klinestore.config import load_config
from klinestore.storage.objectstore import publish

HELP = "copy the dataset's closed months to S3, GCS or another directory (atomic per file, idempotent)"
DESCRIPTION = """\
Publish the Hive-partitioned Parquet dataset to a root on any pyarrow filesystem, keeping the
layout (<root>/bars/interval=.../month=.../<file>.parquet), so DuckDB, Polars, Spark and Trino
can read it there. By default only closed months (a later month exists; compaction has merged
them into one file per writer) and the yearly partitions of 1h and longer (the current year
too) are published; --include-open adds the current month.

Each file appears whole or not at all: where the filesystem renames (local, HDFS) it is written
as a hidden .tmp and moved into place; on object stores (S3, GCS, Azure) an object upload is
already atomic, so it is written at its final key. Files compacted away locally are then
deleted remotely (only files of this data directory's writers; uploads first, deletes last, so
a reader never misses a row). Running it again changes nothing. Credentials come from the
filesystem's usual sources (AWS_* variables, ~/.aws, GOOGLE_APPLICATION_CREDENTIALS...)."""
EXAMPLES = """\
  klinestore publish --to s3://my-bucket/klinestore
  klinestore publish --to gs://my-bucket/klinestore --include-open
  klinestore publish --to /mnt/lake/klinestore --data-dir /srv/klinestore --dry-run
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, metavar="URI",
                        help="destination root: s3://bucket/prefix, gs://bucket/prefix, file:///dir or a local path")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: storage.data_dir of the config)")
    parser.add_argument("--market", choices=("um", "spot"), default="um", help="USD-M futures (default) or spot")
    parser.add_argument("--include-open", action="store_true", help="also publish the current (open) month")
    parser.add_argument("--dry-run", action="store_true", help="say what would be uploaded and deleted, change nothing")


def run(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or load_config().data_dir
    report = publish(data_dir, args.to, market=args.market, include_open=args.include_open, dry_run=args.dry_run)
    for rel in report.uploaded:
        print(f"{'would upload' if args.dry_run else 'uploaded'} {rel}")
    for rel in report.deleted:
        print(f"{'would delete' if args.dry_run else 'deleted'} {rel}")
    how = "rename into place" if report.atomic_rename else "direct upload (atomic per object)"
    print(
        f"{'dry run: ' if args.dry_run else ''}{len(report.uploaded)} files ({report.bytes:,} bytes) published to "
        f"{args.to}, {report.unchanged} already there, {len(report.deleted)} stale files removed; {how}, "
        f"{report.seconds:.2f} s"
    )
    return 0
