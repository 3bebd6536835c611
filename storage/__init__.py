"""Everything klinestore keeps on disk: WAL, Parquet dataset, resampling, import, warm restart."""

from storage.errors import ArchiveError, DatasetError, StorageError, WalError
from storage.schema import BAR_SCHEMA, EXCHANGE_SOURCES, KLINE_FIELDS, SOURCES, Bar

__all__ = [
    "ArchiveError", "BAR_SCHEMA", "Bar", "DatasetError", "EXCHANGE_SOURCES", "KLINE_FIELDS", "SOURCES",
    "StorageError", "WalError",
]
