"""Dataset: one market's bars under a data directory, the on-disk contract behind one object.

What a bar dataset is on disk belongs to storage: the Hive layout and file names
(:mod:`~klinestore.storage.layout`), the dedup rule (:func:`~klinestore.storage.frames.latest`
and its DuckDB twin), atomic publishes and their recovery (:mod:`~klinestore.storage.txn`),
compaction, the publish markers. Other packages read and inspect a dataset through this
object, so none of them needs to know how files are named or where a month lives::

    bars = Dataset(data_dir)                    # USD-M: bars/; Dataset(data_dir, "spot"): bars_spot/
    marks = Dataset(data_dir, "mark")           # the USD-M series: "mark", "index", "funding" (storage.series)
    bars.read("BTCUSDT", "1h", start_ms, end_ms)  # one row per open time, the largest version
    bars.relation_sql("1h")                     # the same rule as a DuckDB SELECT
    bars.intervals()                            # intervals stored, shortest first
    bars.partitions("1m")                       # (interval, month, directory) and their files

Writers do not go through it: the live shard is :class:`~klinestore.storage.store.BarStore`,
the importer :func:`~klinestore.storage.importer.import_archives`, and compaction
:func:`~klinestore.storage.maintenance.compact_all`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from klinestore.core.intervals import INTERVALS, interval_sort_key
from klinestore.storage.layout import GLOB, MARKETS, data_files, dataset_root, list_partitions
from klinestore.storage.reader import bars_relation_sql, read_bars


@dataclass(frozen=True, slots=True)
class Partition:
    """One ``interval=<iv>/month=<YYYY-MM>`` directory of a dataset."""

    interval: str
    month: str
    path: Path

    def files(self) -> list[Path]:
        """Its published data files (any writer), oldest first; ``.tmp`` files never count."""
        return [path for _, path in data_files(self.path)]


class Dataset:
    """One market's bar dataset (see the module docstring)."""

    #: The markets a data directory may hold, each its own dataset.
    MARKETS: tuple[str, ...] = MARKETS

    def __init__(self, data_dir: Path | str, market: str = "um") -> None:
        self.data_dir = Path(data_dir)
        self.market = market
        self.root = dataset_root(self.data_dir, market)  # StorageError for an unknown market

    def __repr__(self) -> str:
        return f"Dataset({str(self.data_dir)!r}, {self.market!r})"

    def read(
        self, symbol: str, interval: str, start_ms: int | None = None, end_ms: int | None = None, *, wal: bool = False
    ) -> pl.DataFrame:
        """Bars of one symbol with open times in ``[start_ms, end_ms)``, oldest first, deduplicated.

        Only the month partitions that can hold the range are opened, so the cost follows
        the range asked for, not the history stored. ``wal`` adds bars still waiting in the
        live service's WAL (USD-M only).
        """
        return read_bars(self.data_dir, symbol, interval, start_ms, end_ms, market=self.market, wal=wal)

    def relation_sql(self, interval: str | None = None, *, skip: Collection[Path] = ()) -> str:
        """A DuckDB ``SELECT`` of every bar (of one interval), one row per key; ``skip``: damaged files left out."""
        return bars_relation_sql(self.data_dir, interval, market=self.market, skip=skip)

    def partitions(self, interval: str | None = None) -> list[Partition]:
        """Every partition (of one interval), sorted by interval name, then month."""
        return [Partition(iv, month, path) for iv, month, path in list_partitions(self.root, interval)]

    def files(self) -> list[Path]:
        """Every data file of the dataset, of every interval and month."""
        return sorted(self.root.glob(GLOB))

    def intervals(self) -> list[str]:
        """The intervals with a partition directory, shortest first."""
        found = {p.interval for p in self.partitions() if p.interval in INTERVALS}
        return sorted(found, key=interval_sort_key)
