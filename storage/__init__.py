"""Everything klinestore keeps on disk: WAL, Parquet dataset, resampling, import, warm restart.

The public surface, re-exported here: :class:`Dataset` (a market's bars on disk: reading,
its SQL relation, its partitions), :class:`BarStore` (the live sink), the readers
(:func:`read_bars`, :func:`load_recent`, :func:`find_gaps`, :func:`find_gaps_many`, :func:`last_stored_open_time`,
:func:`bars_relation_sql`), :func:`resample` / :func:`resample_many` /
:func:`resample_touched`, :func:`bars_from_trades`, :func:`import_archives` the writer and status-file names, the
series (mark and index bars, funding: :class:`SeriesStores`, :func:`read_funding`,
:func:`read_price_bars`, :func:`series_relation_sql`), the aggTrades (:class:`TradeStore`,
:func:`read_agg_trades`, :func:`agg_trades_relation_sql`), the series' archive import
(:func:`import_series`, :func:`import_trade_archives`, :func:`series_of`), and the errors. Other packages import
only from here; the modules behind it are storage's own.
"""

from klinestore.core.schema import BAR_SCHEMA, EXCHANGE_SOURCES, KLINE_FIELDS, SOURCES, Bar
from klinestore.storage.aggtrades import (
    AGG_TRADE_COLUMNS,
    AggTrade,
    TradeStore,
    agg_trades_relation_sql,
    read_agg_trades,
)
from klinestore.storage.archive import find_archives
from klinestore.storage.dataset import Dataset, Partition
from klinestore.storage.errors import ArchiveError, BarError, DatasetError, StorageError, WalError
from klinestore.storage.frames import TIME, to_bars, to_ms
from klinestore.storage.fsguard import prepare_dirs
from klinestore.storage.importer import ImportReport, import_archives
from klinestore.storage.layout import shard_file, shard_writer, tmp_path, wal_dir, writer_slot
from klinestore.storage.quarantine import find_damaged, skipped
from klinestore.storage.quarantine import records as quarantine_records
from klinestore.storage.reader import (
    bars_relation_sql,
    expected_opens,
    find_gaps,
    find_gaps_many,
    gaps_among,
    last_open_times,
    last_stored_open_time,
    load_recent,
    missing_after,
    read_bars,
)
from klinestore.storage.resample import resample, resample_many, resample_touched, resample_touched_many
from klinestore.storage.series import (
    FUNDING_COLUMNS,
    PRICE_BAR_COLUMNS,
    SeriesStores,
    funding_row,
    price_bar,
    read_funding,
    read_price_bars,
    series_relation_sql,
)
from klinestore.storage.series_import import SERIES_KINDS, import_all, import_series, import_trade_archives, series_of
from klinestore.storage.store import BarStore, FlushReport, RestartState
from klinestore.storage.trades import bars_from_trades
from klinestore.storage.txn import fsync_dir, fsync_file, retired_files
from klinestore.storage.writer import parquet_writer

__all__ = [
    "ArchiveError", "BAR_SCHEMA", "Bar", "BarError", "BarStore", "Dataset", "DatasetError", "EXCHANGE_SOURCES",
    "FlushReport", "ImportReport", "KLINE_FIELDS", "Partition", "RestartState", "SOURCES", "StorageError", "TIME",
    "WalError", "bars_from_trades", "bars_relation_sql", "expected_opens", "find_archives", "find_gaps", "find_gaps_many", "gaps_among",
    "import_archives", "last_open_times", "last_stored_open_time", "load_recent", "missing_after", "read_bars",
    "resample", "resample_many", "resample_touched", "resample_touched_many", "shard_file", "shard_writer", "to_bars",
    "to_ms", "writer_slot", "fsync_dir", "fsync_file", "tmp_path", "parquet_writer", "prepare_dirs", "wal_dir",
    "quarantine_records", "find_damaged", "skipped", "retired_files",
    "FUNDING_COLUMNS", "PRICE_BAR_COLUMNS", "SeriesStores", "funding_row", "price_bar", "read_funding",
    "read_price_bars", "series_relation_sql", "AGG_TRADE_COLUMNS", "AggTrade", "TradeStore",
    "agg_trades_relation_sql", "read_agg_trades", "SERIES_KINDS", "import_all", "import_series", "import_trade_archives",
    "series_of",
]
