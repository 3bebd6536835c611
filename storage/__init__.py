"""Everything klinestore keeps on disk: WAL, Parquet dataset, resampling, import, warm restart.

The public surface, re-exported here: :class:`BarStore` (the live sink), the readers
(:func:`read_bars`, :func:`load_recent`, :func:`find_gaps`, :func:`find_gaps_many`, :func:`last_stored_open_time`,
:func:`bars_relation_sql`), :func:`resample` / :func:`resample_many` /
:func:`resample_touched`, :func:`bars_from_trades`, :func:`import_archives` and the errors.
"""

from klinestore.core.schema import BAR_SCHEMA, EXCHANGE_SOURCES, KLINE_FIELDS, SOURCES, Bar
from klinestore.storage.errors import ArchiveError, BarError, DatasetError, StorageError, WalError
from klinestore.storage.importer import ImportReport, import_archives
from klinestore.storage.reader import (
    bars_relation_sql,
    find_gaps,
    find_gaps_many,
    last_open_times,
    last_stored_open_time,
    load_recent,
    missing_after,
    read_bars,
)
from klinestore.storage.resample import resample, resample_many, resample_touched, resample_touched_many
from klinestore.storage.store import BarStore, FlushReport, RestartState
from klinestore.storage.trades import bars_from_trades

__all__ = [
    "ArchiveError", "BAR_SCHEMA", "Bar", "BarError", "BarStore", "DatasetError", "EXCHANGE_SOURCES", "FlushReport",
    "ImportReport", "KLINE_FIELDS", "RestartState", "SOURCES", "StorageError", "WalError", "bars_from_trades",
    "bars_relation_sql", "find_gaps", "find_gaps_many", "import_archives", "last_open_times", "last_stored_open_time",
    "load_recent", "missing_after", "read_bars", "resample", "resample_many", "resample_touched", "resample_touched_many",
]
