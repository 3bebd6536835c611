"""The ingest package's config sections: ``websocket`` (connections, streams, liveness,
reconciliation), ``modes`` and ``rest``; the application composes them (docs/config.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from klinestore.core.options import between, fraction, intervals, opt, positive, route, sub, url
from klinestore.storage.config import ShardingConfig

EXCHANGE_MAX_STREAMS = 1024  # per connection, BINANCE.md
EXCHANGE_WEIGHT_LIMIT = 2400  # REQUEST_WEIGHT per minute, BINANCE.md


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutesConfig:
    market: str = opt("/market", "Route of klines, aggTrade and markPrice streams.", route)
    public: str = opt("/public", "Route of depth streams.", route)


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    max_connections: int | None = opt(
        None, "Most WebSocket connections the pool opens; null: as many as the streams need at "
        "max_streams_per_connection. A bound the streams cannot fit even at 1024 each is a config error.",
        lambda v: None if v is None else between(1, 1000)(v),
    )
    max_streams_per_connection: int = opt(
        200, "Preferred streams per connection; exceeded (up to the exchange's 1024) only when "
        "max_connections binds.", between(1, EXCHANGE_MAX_STREAMS)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectConfig:
    base_delay: float = opt(1.0, "First reconnect delay, doubled per retry.", positive)
    max_delay: float = opt(60.0, "Cap on the reconnect delay.", positive)
    jitter_ratio: float = opt(0.1, "Random spread of each delay (0.1 = +-10 %).", fraction)
    max_retries: int = opt(10, "Retries per episode before the connection is FAILED.", between(1, 1000))
    failed_retry_interval: float = opt(
        300.0, "A FAILED connection is tried again after this long (never abandoned).", positive
    )
    max_concurrent_connects: int = opt(
        2, "Connection attempts in flight across the pool (no reconnect storms).", between(1, 64)
    )
    open_timeout: float = opt(10.0, "Timeout of the opening handshake.", positive)
    reset_after: float = opt(
        30.0, "The retry episode ends (the next loss retries at base_delay) only after a session has "
        "delivered data this long: a server that acknowledges and then drops backs off to max_delay.", positive,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatConfig:
    check_interval: float = opt(30.0, "How often stream liveness is checked.", positive)
    timeout: float = opt(60.0, "A stream (or connection) silent this long is missing (lost).", positive)
    resubscribe_after: float = opt(
        60.0, "A stream still missing this long after it was flagged is resubscribed.", positive
    )
    mark_price_timeout: float = opt(
        5.0, "A markPrice@1s stream (it ticks every second, trades or not) silent this long (or heartbeat.timeout "
        "if shorter) is missing.", positive
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ToleranceConfig:
    price: float = opt(0.0001, "Relative tolerance on close/high/low (0.01 %).", fraction)
    volume: float = opt(0.01, "Relative tolerance on volume (1 %).", fraction)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconciliationConfig:
    kline_interval: float = opt(300.0, "Kline reconciliation period.", positive)
    depth_interval: float = opt(60.0, "Order-book snapshot check period.", positive)
    depth_gap_threshold: int = opt(
        100, "Resync when a snapshot is this many update ids ahead and the book does not catch up.", positive
    )
    aggtrade_interval: float = opt(
        30.0, "WebSocket-only: 1m bars are checked against the aggTrade window this often (it holds only the "
        "newest aggtrade_max_size trades, so a minute must be checked before its trades are evicted).", positive,
    )
    mismatch_tolerance: ToleranceConfig = sub(ToleranceConfig, "Tolerances of kline reconciliation.")


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    kline_max_size: int = opt(500, "Ring-buffer capacity of every kline interval but 1m.", between(1, 10**6))
    kline_1m_history: int = opt(4000, "Ring-buffer capacity of 1m klines (seed v4.4).", between(1, 10**7))
    aggtrade_max_size: int = opt(1000, "aggTrade window, count bound.", between(1, 10**7))
    aggtrade_time_window: float = opt(60.0, "aggTrade window, time bound (exchange seconds).", positive)


@dataclass(frozen=True, slots=True, kw_only=True)
class PingConfig:
    interval: float = opt(20.0, "Client ping period.", positive)
    timeout: float = opt(10.0, "A ping unanswered this long means the connection is lost.", positive)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamsConfig:
    kline_intervals: tuple[str, ...] = opt(
        ("1m", "5m", "15m", "1h", "4h"), "Kline streams subscribed per symbol.", intervals
    )
    aggtrade: bool = opt(True, "Subscribe <symbol>@aggTrade.")
    depth: bool = opt(True, "Subscribe <symbol>@depth and keep a local order book.")
    depth_speed: Literal["100ms", "250ms", "500ms"] = opt("500ms", "Diff-depth update speed.")
    depth_snapshot_limit: Literal[5, 10, 20, 50, 100, 500, 1000] = opt(
        100, "Levels per side an order book keeps, and of its REST snapshots (100 weigh 5, 1000 weigh 20: "
        "at 1000, 200 books need over 2 minutes of the weight budget to sync, and 4x the memory).",
    )
    depth_refresh_interval: float = opt(
        60.0, "Least seconds between two snapshots of one book taken because the price walked toward the "
        "edge of the last one (routine upkeep of a bounded book, at the lowest REST priority).", positive,
    )
    mark_price: bool = opt(True, "Subscribe <symbol>@markPrice@1s.")
    new_listing_intervals: tuple[str, ...] = opt(
        ("1m", "5m", "15m"), "Kline intervals subscribed for new listings (seed §11).", intervals
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class WebsocketConfig:
    base_url: str = opt("wss://fstream.binance.com", "WebSocket base URL.", url(("ws", "wss")))
    rest_url: str = opt("https://fapi.binance.com", "REST base URL.", url(("http", "https")))
    routes: RoutesConfig = sub(RoutesConfig, "Routed URL prefixes.")
    connection_pool: PoolConfig = sub(PoolConfig, "Connection pool.")
    reconnect: ReconnectConfig = sub(ReconnectConfig, "Reconnect backoff.")
    heartbeat: HeartbeatConfig = sub(HeartbeatConfig, "Stream liveness.")
    reconciliation: ReconciliationConfig = sub(ReconciliationConfig, "Reconciliation.")
    cache: CacheConfig = sub(CacheConfig, "In-memory buffers.")
    ping: PingConfig = sub(PingConfig, "Keepalive pings.")
    streams: StreamsConfig = sub(StreamsConfig, "What is subscribed.")
    rotate_after: float = opt(
        23.5 * 3600, "Replace a connection this long after it opened (the exchange closes at 24 h; exchange "
        "seconds, so a fast simulator's tests may set far more).", between(1.0, 1e10),
    )
    control_messages_per_second: float = opt(
        5.0, "Control messages (SUBSCRIBE...) per second per connection (the exchange closes at 10).",
        between(0.1, 9),
    )
    max_queue: int = opt(4096, "Frames buffered per connection before backpressure.", between(16, 10**6))
    read_coalesce: float = opt(
        0.0, "When socket reads come in quick succession, wait this long before the next, so frames "
        "that trickle in one at a time are handled in batches (less CPU, at most this much added latency); "
        "0 reads at once.", between(0, 0.1),
    )
    control_timeout: float = opt(
        10.0, "A SUBSCRIBE/UNSUBSCRIBE unanswered this long means the connection is lost.", positive
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ModesConfig:
    websocket_only_klines: bool = opt(True, "Never call REST klines (env WEBSOCKET_ONLY_KLINES).")
    disable_rest_fallback: bool = opt(True, "No REST back-fill or reconciliation (env DISABLE_REST_FALLBACK).")

    @property
    def rest_klines_allowed(self) -> bool:
        """The three-layer fallback needs both switches off (seed v4.4)."""
        return not self.websocket_only_klines and not self.disable_rest_fallback

    @property
    def name(self) -> str:
        return "fallback" if self.rest_klines_allowed else "websocket_only"


@dataclass(frozen=True, slots=True, kw_only=True)
class RestConfig:
    weight_limit: int = opt(EXCHANGE_WEIGHT_LIMIT, "Exchange request-weight limit per minute.", positive)
    weight_margin: float = opt(0.25, "Share of the weight limit never used (safety margin).", fraction)
    timeout: float = opt(10.0, "Timeout of one REST request.", positive)
    max_retries: int = opt(3, "Retries of a failed REST request (5xx, timeouts, 429).", between(0, 20))
    retry_base_delay: float = opt(0.5, "First delay before a REST retry, doubled per retry.", positive)
    retry_max_delay: float = opt(10.0, "Cap on the REST retry delay.", positive)


class FeedSettings(Protocol):
    """What a :class:`~klinestore.ingest.feed.Feed` reads of the composed config."""

    @property
    def symbols(self) -> tuple[str, ...]: ...
    @property
    def websocket(self) -> WebsocketConfig: ...
    @property
    def modes(self) -> ModesConfig: ...
    @property
    def rest(self) -> RestConfig: ...
    @property
    def sharding(self) -> ShardingConfig: ...
