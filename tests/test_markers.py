"""Publish markers: generations, the bounded list, what a watcher sees and when it must refresh."""

from __future__ import annotations

from pathlib import Path

from klinestore.storage.markers import KEEP, MarkerWatch, announcement, bumped, marker_path, read_marker
from klinestore.storage.txn import write_json_atomic


def publish(data_dir: Path, writer: str, start: int, symbol: str = "BTCUSDT") -> None:
    path = marker_path(data_dir, writer)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, bumped(read_marker(path), announcement(start, {symbol: (start, start + 60_000)})))


def test_a_marker_counts_generations_and_keeps_the_last_few(tmp_path: Path) -> None:
    for start in range(KEEP + 3):
        publish(tmp_path, "imp", start)
    marker = read_marker(marker_path(tmp_path, "imp"))
    assert marker["generation"] == KEEP + 3
    assert [e["generation"] for e in marker["entries"]] == list(range(4, KEEP + 4))


def test_a_watch_sees_other_writers_once_and_never_itself(tmp_path: Path) -> None:
    publish(tmp_path, "imp", 1)
    watch = MarkerWatch(tmp_path, "s0000")
    watch.prime()
    assert watch.poll().changes == []
    publish(tmp_path, "imp", 7, "ETHUSDT")
    publish(tmp_path, "s0000", 8)  # its own publishes are not news
    poll = watch.poll()
    assert [(c.writer, c.start, c.ranges) for c in poll.changes] == [("imp", 7, (("ETHUSDT", 7, 60_007),))]
    assert not poll.missed
    assert watch.poll().changes == poll.changes  # not acted on (a failed flush): reported again
    watch.advance(poll)
    assert watch.poll().changes == []


def test_a_watch_further_behind_than_the_marker_keeps_must_refresh(tmp_path: Path) -> None:
    watch = MarkerWatch(tmp_path, "s0000")
    watch.prime()
    for start in range(KEEP + 1):
        publish(tmp_path, "imp", start)
    poll = watch.poll()
    assert poll.missed and len(poll.changes) == KEEP
    watch.advance(poll)
    marker_path(tmp_path, "imp").write_text("{not json")  # unreadable: skipped, never a traceback
    assert not watch.poll().missed
    marker_path(tmp_path, "imp").unlink()
    publish(tmp_path, "imp", 99)  # restarted from generation 1: behind what was seen
    assert watch.poll().missed


def test_a_publish_interrupted_before_its_marker_is_announced_by_recovery(tmp_path: Path, monkeypatch) -> None:
    import pytest

    from klinestore.storage import txn
    from klinestore.storage.errors import StorageError
    from klinestore.storage.layout import Stamper

    stamper = Stamper("imp")
    publish = txn.Publish(tmp_path, "imp", stamper)
    final = tmp_path / "bars" / "interval=1m" / "month=2024-01" / f"{stamper.next():016x}-imp-g0.parquet"
    txn.tmp_path(final).parent.mkdir(parents=True)
    txn.tmp_path(final).write_bytes(b"rows")
    publish.created.append(final)
    publish.announce = announcement(5, {"BTCUSDT": (0, 60_000)})

    def crash(*_: object) -> None:
        raise OSError("killed after the renames")

    monkeypatch.setattr(txn, "bumped", crash)
    with pytest.raises(StorageError):
        publish.commit()
    monkeypatch.undo()
    assert final.exists() and not marker_path(tmp_path, "imp").exists()
    txn.recover(tmp_path, "imp", [tmp_path / "bars"])
    marker = read_marker(marker_path(tmp_path, "imp"))
    assert marker["generation"] == 1 and marker["entries"][0]["ranges"] == [["BTCUSDT", 0, 60_000]]
    assert not list((tmp_path / "state").glob("txn-*.json"))


def test_a_publish_fsyncs_each_directory_once_and_writes_the_marker_with_it(tmp_path: Path, monkeypatch) -> None:
    from collections import Counter

    from klinestore.storage import txn
    from klinestore.storage.layout import Stamper

    synced: Counter[Path] = Counter()
    real = txn.fsync_dir
    monkeypatch.setattr(txn, "fsync_dir", lambda path: (synced.update([Path(path)]), real(path)))
    stamper = Stamper("s0000")
    publish = txn.Publish(tmp_path, "s0000", stamper)
    for interval in ("1m", "5m"):
        final = tmp_path / "bars" / f"interval={interval}" / "month=2024-01" / f"{stamper.next():016x}-s0000-g0.parquet"
        publish.new_file(final).write_bytes(b"rows")
    publish.announce = announcement(1, {"BTCUSDT": (0, 0)})
    publish.commit()
    state = tmp_path / "state"
    assert synced.pop(state) == 2  # the journal written, then the journal gone and the marker bumped
    assert len(synced) == 2 and set(synced.values()) == {1}, synced  # each partition directory once
    assert read_marker(marker_path(tmp_path, "s0000"))["generation"] == 1
