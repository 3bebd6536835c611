"""Where every byte lives under the data directory, and how files are named.

::

    <data_dir>/
      bars/                              USD-M dataset (``bars_spot/`` for --market spot)
        interval=1m/month=2024-01/
          0017a3c29be1f000-s0000-g0.parquet     <stamp>-<writer>-g<generation>
          .0017a3c29be1f000-s0000-g0.parquet.tmp   being written: no *.parquet glob matches
      wal/s0000/00000000000000000007.wal   write-ahead log of shard 0, one file per segment
      state/
        s0000.lock                         held by the process that writes as shard 0
        txn-s0000-<stamp>.json             a publish in progress, or inputs awaiting deletion
        marker-s0000.json                  the writer's publish generation and last 1m ranges

A *writer* is a shard of the live service (``s0000``..``s4095``) or the importer (``imp``).
Each writer holds its lock, writes only files with its own name in them and compacts only
those, so processes never contend for a file. The stamp is unique and increasing per writer.

Rows carry a ``version``: ``rank << 60 | stamp``, with rank 1 for the exchange's own bars and
0 for resampled ones. Of several rows with one key (symbol, interval, open_time) the largest
version wins: exchange bars over resampled ones, then the last write. Stamps are the writer's
wall clock in ms times 8192 plus a writer slot, so versions from two processes never tie.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from klinestore.storage.errors import StorageError

Market = Literal["um", "spot"]
MARKETS: tuple[str, ...] = ("um", "spot")
#: USD-M series stored as bar-shaped rows beside the klines (:mod:`klinestore.storage.series`):
#: each its own dataset, written by its own writers (``m0000``, ``x0000``, ``f0000``), so its
#: WAL, lock, journals and markers never meet the klines'.
SERIES: tuple[str, ...] = ("mark", "index", "funding")
#: Every dataset a data directory may hold: the markets' klines, then the series.
DATASETS: tuple[str, ...] = MARKETS + SERIES
_ROOTS = {"um": "bars", "spot": "bars_spot", "mark": "mark_bars", "index": "index_bars", "funding": "funding"}
#: The letter of a dataset's live writers (``s`` for klines; the importer is ``imp`` everywhere).
WRITER_LETTERS = {"um": "s", "spot": "s", "mark": "m", "index": "x", "funding": "f", "agg_trades": "t"}
#: The aggTrades dataset (:mod:`klinestore.storage.aggtrades`): ``agg_trades/day=YYYY-MM-DD/``.
AGG_TRADES_DIR = "agg_trades"
#: The partition directories of every dataset, relative to its root (bars by month, trades by day).
PARTITION_GLOBS = ("interval=*/month=*", "day=*")

IMPORT_WRITER = "imp"
_IMPORT_SLOT = 4096
_SLOTS = 8192
EXCHANGE_RANK = 1 << 60
#: Every data file of a dataset, relative to its root; a ``.tmp`` never matches.
GLOB = "interval=*/month=*/*.parquet"

_NAME = re.compile(r"(?P<stamp>[0-9a-f]{16})-(?P<writer>[smxft]\d{4}|imp)-g(?P<gen>\d{1,3})\.parquet")


def dataset_root(data_dir: Path, market: str = "um") -> Path:
    """Root of a dataset: ``bars/`` for USD-M, ``bars_spot/``, ``mark_bars/``, ``index_bars/``, ``funding/``."""
    if market not in DATASETS:
        raise StorageError(f"unknown market {market!r}; expected one of {', '.join(MARKETS)}")
    return Path(data_dir) / _ROOTS[market]


def state_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "state"


def wal_dir(data_dir: Path, writer: str) -> Path:
    return Path(data_dir) / "wal" / writer


def shard_writer(shard_id: int, dataset: str = "um") -> str:
    """The writer name of a live-service shard (of a series dataset: its own letter)."""
    if not 0 <= shard_id < _IMPORT_SLOT:
        raise StorageError(f"shard_id {shard_id} out of range 0..{_IMPORT_SLOT - 1}")
    return f"{WRITER_LETTERS[dataset]}{shard_id:04d}"


def is_writer(name: str) -> bool:
    """A writer name: ``imp`` or a shard of some dataset (``s0003``, ``m0000``, ...)."""
    return name == IMPORT_WRITER or (len(name) == 5 and name[0] in "smxft" and name[1:].isdigit())


def writer_slot(writer: str) -> int:
    return _IMPORT_SLOT if writer == IMPORT_WRITER else int(writer[1:])


def month_of(open_ms: int) -> str:
    """The ``month=`` partition value of a bar: the UTC month of its open time."""
    dt = datetime.fromtimestamp(open_ms / 1000, tz=timezone.utc)
    return f"{dt.year:04d}-{dt.month:02d}"


def partition_dir(root: Path, interval: str, month: str) -> Path:
    return root / f"interval={interval}" / f"month={month}"


def tmp_path(final: Path) -> Path:
    """The name a file is written under before it is renamed to ``final``."""
    return final.with_name(f".{final.name}.tmp")


@dataclass(frozen=True, slots=True)
class FileName:
    """A parsed data-file name."""

    stamp: int
    writer: str
    generation: int

    @property
    def name(self) -> str:
        return f"{self.stamp:016x}-{self.writer}-g{self.generation}.parquet"

    @classmethod
    def parse(cls, name: str) -> FileName | None:
        match = _NAME.fullmatch(name)
        if match is None:
            return None
        return cls(int(match["stamp"], 16), match["writer"], int(match["gen"]))


class Stamper:
    """Unique, increasing stamps for one writer (thread-safe).

    ``ms * 8192 + slot``: ordered by the writer's wall clock across processes (the only
    order two processes share), strictly increasing within one even if the clock steps back.
    """

    def __init__(self, writer: str) -> None:
        self._slot = writer_slot(writer)
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            now = int(time.time() * 1000) * _SLOTS + self._slot
            self._last = max(now, self._last + _SLOTS)
            return self._last

    def observe(self, stamp: int) -> None:
        """Never issue a stamp at or below one already on disk (clock stepped back)."""
        with self._lock:
            self._last = max(self._last, stamp - stamp % _SLOTS + self._slot)


def list_partitions(root: Path, interval: str | None = None) -> list[tuple[str, str, Path]]:
    """Every ``(interval, month, path)`` partition under ``root``, sorted."""
    out: list[tuple[str, str, Path]] = []
    if not root.is_dir():
        return out
    for iv_dir in sorted(root.glob(f"interval={interval}" if interval else "interval=*")):
        for month_dir in sorted(iv_dir.glob("month=*")):
            if month_dir.is_dir():
                out.append((iv_dir.name.split("=", 1)[1], month_dir.name.split("=", 1)[1], month_dir))
    return out


def data_files(partition: Path, writer: str | None = None) -> list[tuple[FileName, Path]]:
    """The published data files of a partition (optionally one writer's), oldest first."""
    out = []
    for path in partition.glob("*.parquet"):
        parsed = FileName.parse(path.name)
        if parsed is not None and (writer is None or parsed.writer == writer):
            out.append((parsed, path))
    out.sort(key=lambda item: item[0].stamp)
    return out


def shard_file(name: str, shard_id: int, num_shards: int) -> str:
    """A service file at the top of the data directory, one per shard when there are several.

    ``status.json`` stays ``status.json`` for a lone service; shard 1 of 2 writes
    ``status-s0001.json``, so shards sharing a data directory never overwrite each other.
    """
    if num_shards <= 1:
        return name
    stem, dot, suffix = name.partition(".")
    return f"{stem}-{shard_writer(shard_id)}{dot}{suffix}"
