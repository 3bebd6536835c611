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

Names load on first use (:func:`klinestore.core.lazy.lazy_exports`), so importing
``klinestore.storage.config`` does not import Polars.
"""

from klinestore.core.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "klinestore.core.schema": ("BAR_SCHEMA", "EXCHANGE_SOURCES", "KLINE_FIELDS", "SOURCES", "Bar"),
    "aggtrades": ("AGG_TRADE_COLUMNS", "AggTrade", "TradeStore", "agg_trades_relation_sql", "read_agg_trades"),
    "archive": ("find_archives",),
    "dataset": ("Dataset", "Partition"),
    "errors": ("ArchiveError", "BarError", "DatasetError", "StorageError", "WalError"),
    "frames": ("TIME", "to_bars", "to_ms"),
    "fsguard": ("prepare_dirs",),
    "importer": ("ImportReport", "import_archives"),
    "layout": ("shard_file", "shard_writer", "tmp_path", "wal_dir", "writer_slot"),
    "quarantine": ("find_damaged", "skipped", "quarantine_records=records"),
    "reader": (
        "bars_relation_sql", "expected_opens", "find_gaps", "find_gaps_many", "gaps_among", "last_open_times",
        "last_stored_open_time", "load_recent", "missing_after", "read_bars"
    ),
    "resample": ("resample", "resample_many", "resample_touched", "resample_touched_many"),
    "series": (
        "FUNDING_COLUMNS", "PRICE_BAR_COLUMNS", "SeriesStores", "funding_row", "price_bar", "read_funding",
        "read_price_bars", "series_relation_sql"
    ),
    "series_import": ("SERIES_KINDS", "import_all", "import_series", "import_trade_archives", "series_of"),
    "store": ("BarStore", "FlushReport", "RestartState"),
    "trades": ("bars_from_trades",),
    "txn": ("fsync_dir", "fsync_file", "retired_files"),
    "writer": ("parquet_writer",),
})
