"""The dataset on pyarrow filesystems: a published copy reads exactly like the local dataset.

No network: the remote is a ``SubTreeFileSystem`` over a local directory (rename-capable, and
with ``atomic_rename=False`` written the way object stores are), and an fsspec in-memory
filesystem through ``PyFileSystem`` when fsspec happens to be installed.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from klinestore.storage import BarStore, StorageError, read_bars
from klinestore.storage.layout import FileName, data_files
from klinestore.storage.objectstore import publish, read_bars_fs, renames
from queries_support import CONFIG, minute_bars
from support import klinestore_command, subprocess_env

JAN_31_22H = 1_706_738_400_000  # 2024-01-31 22:00 UTC: January closes two hours in
FEB_1 = 1_706_745_600_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
INTERVALS = ("1m", "5m", "15m", "1h", "4h")


def build(data: Path) -> Path:
    """Four hours of 1m bars across a month end, flushed in three pieces (several files per partition)."""
    store = BarStore(data, CONFIG)
    store.open()
    try:
        bars = {s: minute_bars(s, 240, t0=JAN_31_22H, seed=n) for n, s in enumerate(SYMBOLS)}
        for piece in (slice(0, 50), slice(50, 100), slice(100, 240)):
            for symbol in SYMBOLS:
                store.append(bars[symbol][piece])
            store.flush()
    finally:
        store.close()
    return data


def remote_tree(fs: pafs.FileSystem, root: str) -> dict[str, int]:
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path: int(i.size or 0) for i in infos if i.type == pafs.FileType.File}


def assert_reads_equal(
    data: Path, root: str, fs: pafs.FileSystem | None, start: int | None, end: int | None, intervals: tuple[str, ...] = INTERVALS
) -> None:
    for symbol, interval in itertools.product(SYMBOLS, intervals):
        local = read_bars(data, symbol, interval, start, end)
        assert local.height, (symbol, interval)
        assert read_bars_fs(root, symbol, interval, start, end, filesystem=fs).equals(local), (symbol, interval)


@pytest.fixture
def lake(tmp_path: Path) -> pafs.SubTreeFileSystem:
    (tmp_path / "lake").mkdir()
    return pafs.SubTreeFileSystem(str(tmp_path / "lake"), pafs.LocalFileSystem())


@pytest.mark.parametrize("rename", [True, False], ids=["rename-into-place", "object-store-style"])
def test_published_closed_months_read_like_the_local_dataset(tmp_path: Path, lake: pafs.FileSystem, rename: bool) -> None:
    data = build(tmp_path / "data")
    first = publish(data, "klinestore", filesystem=lake, atomic_rename=rename)
    # a month is closed once its interval has a later one: January of 1m..15m; 1h and 4h are
    # partitioned by year and published open (else the copy would lag up to a year)
    assert {rel.split("/")[0] for rel in first.uploaded} == {f"interval={iv}" for iv in INTERVALS}
    assert all(("/month=2024-01/" in rel) != ("/month=2024/" in rel) for rel in first.uploaded)
    assert all(("/month=2024/" in rel) == (rel.split("/")[0] in ("interval=1h", "interval=4h")) for rel in first.uploaded)
    assert first.atomic_rename is rename and first.deleted == []
    assert_reads_equal(data, "klinestore", lake, None, FEB_1, INTERVALS[:3])
    assert_reads_equal(data, "klinestore", lake, None, None, INTERVALS[3:])
    assert read_bars_fs("klinestore", "BTCUSDT", "1m", FEB_1, None, filesystem=lake).height == 0
    copied = remote_tree(lake, "klinestore")
    assert not [p for p in copied if p.endswith(".tmp")]

    again = publish(data, "klinestore", filesystem=lake, atomic_rename=rename)
    assert (again.uploaded, again.deleted, again.unchanged) == ([], [], len(first.uploaded))
    assert remote_tree(lake, "klinestore") == copied

    everything = publish(data, "klinestore", filesystem=lake, atomic_rename=rename, include_open=True)
    assert everything.uploaded and all("/month=2024-02/" in rel for rel in everything.uploaded)
    assert_reads_equal(data, "klinestore", lake, None, None)
    assert_reads_equal(data, "klinestore", lake, JAN_31_22H + 90 * 60_000, FEB_1 + 30 * 60_000, INTERVALS[:4])


def test_compacted_files_replace_their_inputs_remotely_and_readers_never_see_a_difference(
    tmp_path: Path, lake: pafs.FileSystem
) -> None:
    data = build(tmp_path / "data")
    publish(data, "kl", filesystem=lake, include_open=True)
    january = data / "bars" / "interval=1m" / "month=2024-01"
    remote_jan = "kl/bars/interval=1m/month=2024-01"
    inputs = [p.name for _, p in data_files(january)]
    assert len(inputs) == 3
    foreign = FileName(FileName.parse(inputs[0]).stamp + 1, "s0007", 0).name  # type: ignore[union-attr]
    lake.copy_file(f"{remote_jan}/{inputs[0]}", f"{remote_jan}/{foreign}")  # another machine's shard
    leftover = f"kl/bars/interval=1m/month=2024-02/.{inputs[0]}.tmp"
    with lake.open_output_stream(leftover) as out:  # an upload interrupted half-way
        out.write(b"PAR1 torn")

    with BarStore(data, CONFIG) as store:
        store.compact()
    (merged,) = [p for _, p in data_files(january)]
    with merged.open("rb") as src, lake.open_output_stream(f"{remote_jan}/{merged.name}") as out:
        out.write(src.read())  # what a reader sees between a publish's uploads and its deletes
    assert_reads_equal(data, "kl", lake, None, None)

    report = publish(data, "kl", filesystem=lake, include_open=True)
    assert sorted(r.rsplit("/", 1)[1] for r in report.deleted if "interval=1m/month=2024-01" in r) == sorted(inputs)
    assert any(r.endswith(".tmp") for r in report.deleted)
    names = {p.rsplit("/", 1)[1] for p in remote_tree(lake, remote_jan)}
    assert names == {merged.name, foreign}  # the foreign writer's file is not this data directory's to delete
    assert_reads_equal(data, "kl", lake, None, None)
    assert publish(data, "kl", filesystem=lake, include_open=True).deleted == []


def test_publish_command_and_uris(tmp_path: Path) -> None:
    data = build(tmp_path / "data")
    uri = (tmp_path / "lake").as_uri()
    proc = subprocess.run(klinestore_command("publish", "--to", uri, "--data-dir", str(data), "--include-open"),
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert f"published to {uri}, 0 already there, 0 stale files removed; rename into place" in last
    assert (tmp_path / "lake" / "bars" / "interval=15m" / "month=2024-02").is_dir()
    assert (tmp_path / "lake" / "bars" / "interval=1h" / "month=2024").is_dir()
    assert_reads_equal(data, uri, None, None, None)
    assert_reads_equal(data, str(tmp_path / "lake"), None, None, None)
    for inside in (data, data / "bars", data / "bars" / "interval=1m"):  # a copy there would be read as more bars
        with pytest.raises(StorageError, match="inside klinestore's own files"):
            publish(data, inside.as_uri())


def test_object_stores_are_written_in_place_everything_else_renamed() -> None:
    s3 = pafs.S3FileSystem(anonymous=True, region="us-east-1")  # constructing one touches no network
    assert not renames(s3) and not renames(pafs.SubTreeFileSystem("bucket/prefix", s3))
    assert not renames(pafs.GcsFileSystem(anonymous=True))
    assert renames(pafs.LocalFileSystem()) and renames(pafs.SubTreeFileSystem("/tmp", pafs.LocalFileSystem()))


def test_fsspec_memory_filesystem(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    memory = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory")))
    data = build(tmp_path / "data")
    publish(data, "/klinestore", filesystem=memory, include_open=True)
    assert_reads_equal(data, "/klinestore", memory, None, None)
