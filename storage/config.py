"""The storage package's config sections: ``storage`` (the dataset on disk) and ``sharding``.

:func:`default_data_dir` finds the data directory the way the service does (environment,
then the config file), so a reader needs no application import to find the dataset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from klinestore.core.errors import ConfigError
from klinestore.core.options import between, build, intervals, non_negative, opt, positive, read_json

#: The config file read when none is named (``KLINESTORE_CONFIG`` names another).
DEFAULT_CONFIG_PATH = Path("config/websocket.json")


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    data_dir: str = opt("data", "Data directory (env KLINESTORE_DATA_DIR).")
    flush_interval: float = opt(60.0, "Closed bars reach Parquet within this long.", positive)
    wal_fsync_window: float = opt(1.0, "WAL appends are fsynced in batches within this window.", between(0, 1))
    compaction_interval: float = opt(600.0, "Compaction period.", positive)
    compaction_min_files: int = opt(8, "A partition is compacted once it holds this many files.", between(2, 10**4))
    compaction_grace: float = opt(
        60.0, "Compacted-away files stay readable this long, so queries already running finish.", non_negative
    )
    resample_intervals: tuple[str, ...] = opt(
        ("5m", "15m", "1h", "4h"), "Intervals resampled from 1m and persisted.", intervals
    )
    persist_aggtrades: bool = opt(
        False, "Keep every aggTrade received in the agg_trades dataset (its disk cost: docs/storage.md); also lets a "
        "stalled kline stream be repaired from the trades."
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardingConfig:
    shard_id: int = opt(0, "This process's shard (symbols hashed by name).", non_negative)
    num_shards: int = opt(1, "Number of ingest shards writing one dataset.", between(1, 4096))


def config_file(env: Mapping[str, str]) -> Path | None:
    """The config file in force: ``KLINESTORE_CONFIG`` (which must exist), else the default if present."""
    if env.get("KLINESTORE_CONFIG"):
        path = Path(env["KLINESTORE_CONFIG"])
        if not path.is_file():
            raise ConfigError("KLINESTORE_CONFIG", f"no such file: {path}")
        return path
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The data directory: ``KLINESTORE_DATA_DIR``, else the config file's ``storage.data_dir``, else ``data``.

    Only the ``storage`` section is read, and strictly, so a bad value there is an error here too.
    """
    env = os.environ if env is None else env
    if env.get("KLINESTORE_DATA_DIR"):
        return Path(env["KLINESTORE_DATA_DIR"])
    path = config_file(env)
    data = read_json(path) if path is not None else {}
    if not isinstance(data, Mapping):
        raise ConfigError("", "the top level must be a JSON object")
    return Path(build(StorageConfig, data.get("storage", {}), "storage.").data_dir)
