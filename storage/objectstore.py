"""The dataset on any pyarrow filesystem: read bars there, and publish a local dataset to it.

A *root* on a filesystem has the data directory's layout: ``<root>/bars/interval=1m/month=
2024-01/<stamp>-<writer>-g<gen>.parquet`` (``bars_spot/`` for spot), the same Hive-partitioned
files DuckDB, Polars, Spark and Trino read. A root is a URI (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``file:///srv/lake``), a local path, or a path on a
:class:`pyarrow.fs.FileSystem` you pass (``SubTreeFileSystem``, ``PyFileSystem(FSSpecHandler(...))``).

**Reading** (:func:`read_bars_fs`) goes through ``pyarrow.dataset`` with Hive partitioning,
prunes by partition (month, or year for 1h and longer), filters by symbol and time in the scan, and applies storage's dedup rule
(largest ``version`` per key), so it returns exactly what :func:`storage.read_bars` returns
for the same files.

**Publishing** (:func:`publish`) uploads the local dataset's live files (by default only
closed months, which compaction has merged into one file per writer, and the yearly partitions
of 1h and longer; ``include_open`` adds the current month) and then deletes, in the partitions it published, remote files of this data
directory's writers that are no longer live locally (compacted away). Per file it is atomic:

* on filesystems that rename (local, HDFS, mock, fsspec memory...) a file is written as
  ``.<name>.tmp`` (hidden from pyarrow, Spark, Trino and ``*.parquet`` globs) and moved into
  place;
* on object stores (S3, GCS, Azure) a rename is a copy plus a delete, but an object PUT is
  itself atomic (a reader sees the whole object or none), so the file is written at its final
  key directly.

Between the uploads and the deletes a reader may see a merged file beside its inputs; their
rows carry the same versions, so the dedup makes that invisible. Uploads come first, deletes
last, and a partition whose local files changed during the run is not pruned, so a reader
never loses a row. Running it again uploads nothing and deletes nothing (files are immutable
and uniquely named; a remote file of another size is uploaded again). Writer names are global
to a dataset: two data directories publishing to one root must not share a writer (distinct
``shard_id``; one importer), exactly as two processes sharing one data directory must not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from klinestore.core.intervals import check_interval
from klinestore.core.symbols import check_symbol
from klinestore.storage.errors import DatasetError, StorageError
from klinestore.storage.frames import KEY, empty, latest, to_public
from klinestore.storage.fsguard import check_output_path
from klinestore.storage.layout import FileName, data_files, dataset_root, is_yearly, list_partitions, partition_range, state_dir
from klinestore.storage.txn import retired_files

#: pyarrow ``type_name``s of object stores: a rename there is copy + delete, a PUT is atomic.
OBJECT_STORES = frozenset({"s3", "gcs", "abfs"})
_MONTH = ds.partitioning(pa.schema([("month", pa.string())]), flavor="hive")


def resolve(root: str | Path, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` of a root: a URI, a local path, or a path on ``filesystem``."""
    text = str(root)
    if filesystem is not None:
        return filesystem, text.rstrip("/")
    if "://" not in text:
        return pafs.LocalFileSystem(), str(Path(text).resolve())
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise StorageError(f"cannot open {text}: {exc}") from None
    return fs, path.rstrip("/")


def dataset_path(root: str, market: str = "um") -> str:
    """The dataset under a root on a filesystem (``<root>/bars``), as on local disk."""
    return f"{root}/{dataset_root(Path(), market).name}" if root else dataset_root(Path(), market).name


def read_bars_fs(
    root: str | Path,
    symbol: str,
    interval: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    filesystem: pafs.FileSystem | None = None,
    market: str = "um",
) -> pl.DataFrame:
    """Bars of one symbol and interval with open times in ``[start_ms, end_ms)`` from a root anywhere.

    The same frame as :func:`storage.read_bars` on local files: the 15 bar columns, times
    ``Datetime("ms", "UTC")``, one row per open time (largest ``version``), oldest first.
    """
    symbol, interval = check_symbol(symbol), check_interval(interval)
    fs, path = resolve(root, filesystem)
    folder = f"{dataset_path(path, market)}/interval={interval}"
    try:
        if fs.get_file_info(folder).type != pafs.FileType.Directory:
            return to_public(empty(public=True))
        dataset = ds.dataset(folder, filesystem=fs, format="parquet", partitioning=_MONTH)
        table = dataset.to_table(filter=_filter(symbol, interval, start_ms, end_ms))
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"cannot read {interval} bars under {root}: {exc}") from exc
    frame = pl.from_arrow(table.drop_columns(["month"]))
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(pl.lit(interval).alias("interval"))
    return to_public(latest(frame, KEY)).sort("open_time")


@dataclass(slots=True)
class PublishReport:
    uploaded: list[str] = field(default_factory=list)  # paths relative to the dataset (interval=../month=../name)
    unchanged: int = 0  # files already there with the same size
    deleted: list[str] = field(default_factory=list)  # stale remote files of this data directory's writers
    bytes: int = 0
    atomic_rename: bool = True
    seconds: float = 0.0


def publish(
    data_dir: Path | str,
    root: str | Path,
    *,
    filesystem: pafs.FileSystem | None = None,
    market: str = "um",
    include_open: bool = False,
    atomic_rename: bool | None = None,
    dry_run: bool = False,
) -> PublishReport:
    """Mirror the local dataset's live files (closed months unless ``include_open``) under ``root``."""
    started = time.perf_counter()
    data_dir = Path(data_dir)
    local_root = dataset_root(data_dir, market)
    fs, path = resolve(root, filesystem)
    if isinstance(fs, pafs.LocalFileSystem):  # a copy inside bars/ would be read as more bars
        check_output_path(Path(path), data_dir)
    rename = renames(fs) if atomic_rename is None else atomic_rename
    report = PublishReport(atomic_rename=rename)
    owned = {lock.stem for lock in state_dir(data_dir).glob("*.lock")}  # every writer of this data dir took its lock here
    retired = retired_files(data_dir)
    partitions = _published_partitions(local_root, include_open)
    stable: list[tuple[str, str, dict[str, int]]] = []
    for rel, local in partitions:
        folder = f"{dataset_path(path, market)}/{rel}"
        remote = _listing(fs, folder)
        live = {p.name: p for _, p in data_files(local) if p not in retired}
        vanished = False
        for name, source in sorted(live.items()):
            size = _size(source)
            if size is None:  # compacted away since the listing: its rows are in a newer file
                vanished = True
                continue
            if remote.get(name) == size:
                report.unchanged += 1
                continue
            if not dry_run:
                _upload(fs, source, folder, name, rename)
            report.uploaded.append(f"{rel}/{name}")
            report.bytes += size
        if not vanished:
            stable.append((rel, folder, {n: s for n, s in remote.items() if n not in live}))
    for rel, folder, extra in stable:  # deletes last: every row is in an uploaded file first
        for name in sorted(extra):
            if _stale(name, owned):
                if not dry_run:
                    fs.delete_file(f"{folder}/{name}")
                report.deleted.append(f"{rel}/{name}")
    report.seconds = time.perf_counter() - started
    return report


def renames(fs: pafs.FileSystem) -> bool:
    """Whether ``fs`` renames a file atomically (object stores copy and delete instead)."""
    while isinstance(fs, pafs.SubTreeFileSystem):
        fs = fs.base_fs
    return fs.type_name not in OBJECT_STORES


def _published_partitions(local_root: Path, include_open: bool) -> list[tuple[str, Path]]:
    """``(interval=../month=.., local dir)`` to publish: closed months (a later month exists) and
    every yearly partition (1h and longer: a year of them is small, and waiting for the year to
    close would leave the copy up to a year behind), or all."""
    partitions = list_partitions(local_root)

    def period(interval: str, value: str) -> str:  # a monthly partition of an older layout counts in its year
        return value[:4] if is_yearly(interval) else value

    newest: dict[str, str] = {}
    for interval, month, _ in partitions:
        newest[interval] = max(newest.get(interval, ""), period(interval, month))
    return [(f"interval={iv}/month={m}", p) for iv, m, p in partitions
            if include_open or is_yearly(iv) or period(iv, m) < newest[iv]]


def _listing(fs: pafs.FileSystem, folder: str) -> dict[str, int]:
    """File name -> size of the files directly in ``folder`` (nothing when it does not exist)."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"cannot list {folder}: {exc}") from exc
    return {i.base_name: int(i.size or 0) for i in infos if i.type == pafs.FileType.File}


def _upload(fs: pafs.FileSystem, source: Path, folder: str, name: str, rename: bool) -> None:
    final = f"{folder}/{name}"
    target = f"{folder}/.{name}.tmp" if rename else final
    try:
        fs.create_dir(folder, recursive=True)
        with source.open("rb") as src, fs.open_output_stream(target) as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        if rename:
            fs.move(target, final)
    except (pa.ArrowException, OSError) as exc:
        if rename:
            _delete_quietly(fs, target)
        raise DatasetError(f"cannot upload {source} to {final}: {exc}") from exc


def _stale(name: str, owned: set[str]) -> bool:
    """A remote data file (or a leftover upload) of one of this data directory's writers."""
    if name.startswith(".") and name.endswith(".tmp"):
        name = name[1:-4]
    parsed = FileName.parse(name)
    return parsed is not None and parsed.writer in owned


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except (pa.ArrowException, OSError):
        pass


def _filter(symbol: str, interval: str, start_ms: int | None, end_ms: int | None) -> ds.Expression:
    """Symbol and time in the scan (row-group statistics), partitions in the path (pruning)."""
    expr = ds.field("symbol") == symbol
    low, high = partition_range(interval, start_ms, end_ms)
    if start_ms is not None:
        expr &= (ds.field("month") >= low) & (ds.field("open_time") >= _ts(start_ms))
    if end_ms is not None:
        expr &= (ds.field("month") <= high) & (ds.field("open_time") < _ts(end_ms))
    return expr


def _ts(ms: int) -> pa.Scalar:
    return pa.scalar(ms, pa.timestamp("ms", tz="UTC"))
