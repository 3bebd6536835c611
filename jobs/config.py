"""The jobs package's config sections: ``jobs`` (schedules, DataQual) and ``alerts``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from klinestore.core.options import between, non_negative, opt, positive
from klinestore.ingest.config import ModesConfig, WebsocketConfig
from klinestore.ingest.protocol.archive import DEFAULT_ARCHIVE_URL
from klinestore.storage.config import ShardingConfig, StorageConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsConfig:
    dataqual_interval: float = opt(30.0, "DataQual scores are recorded this often.", positive)
    publish_interval: float = opt(30.0, "DataQual tables are published as Parquet this often.", positive)
    listing_refresh_interval: float = opt(300.0, "exchangeInfo refresh (new listings) period.", positive)
    status_interval: float = opt(5.0, "status.json is rewritten this often.", positive)
    gap_check_interval: float = opt(
        60.0, "Open gap records are checked against storage this often (an import or a back-fill closes them).",
        positive,
    )
    dataqual_half_life: float = opt(
        900.0, "DataQual: a reconciliation mismatch or order-book resync weighs half as much after this long "
        "(exchange seconds).", positive,
    )
    stale_after: float = opt(
        30.0, "DataQual: a symbol is stale once its next 1m bar is this late (exchange seconds).", positive
    )
    archive_fill: bool = opt(
        False, "WebSocket-only: fetch the exchange's daily 1m archives of the days with open gaps (checksums "
        "verified, 0 REST weight) and import them, every archive_fill_interval.",
    )
    archive_fill_interval: float = opt(86400.0, "archive_fill period (the first run is a minute after start).", positive)
    archive_url: str = opt(DEFAULT_ARCHIVE_URL, "The archive host archive_fill downloads from (data.binance.vision's "
                                                "layout; klinestore run --sim uses the simulator's).")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertsConfig:
    max_reconnects_per_hour: int = opt(
        5, "More connection losses than this within reconnect_window raise an alert.", non_negative
    )
    reconnect_window: float = opt(3600.0, "The window of max_reconnects_per_hour (exchange seconds).", positive)
    warming_up_max: float = opt(
        90 * 60.0, "A series warming_up longer than this (exchange seconds; and past its first possible close) "
        "raises an alert.", positive,
    )
    dataqual_min: float = opt(0.90, "A DataQual score below this raises an alert.", between(0, 1))


class JobSettings(Protocol):
    """What the scheduled jobs read of the composed config."""

    @property
    def websocket(self) -> WebsocketConfig: ...
    @property
    def modes(self) -> ModesConfig: ...
    @property
    def jobs(self) -> JobsConfig: ...
    @property
    def alerts(self) -> AlertsConfig: ...
    @property
    def sharding(self) -> ShardingConfig: ...
    @property
    def storage(self) -> StorageConfig: ...
