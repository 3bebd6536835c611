"""Typed, frozen configuration with the seeds' defaults, loaded once and strict.

Precedence, lowest first: the defaults below, the JSON file (``config/websocket.json`` or
``KLINESTORE_CONFIG``), environment variables, then command-line overrides. An unknown key
or a bad value raises :class:`ConfigError` naming the dotted key, so a typo never silently
falls back to a default (cryptofeed's config dicts swallow typos; ours do not).

Durations are seconds (floats) everywhere, so tests scale every timer through config.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from klinestore.errors import ConfigError, InvalidInterval, InvalidSymbol
from klinestore.intervals import check_interval
from klinestore.symbols import check_symbol

EXCHANGE_MAX_STREAMS = 1024  # per connection, BINANCE.md
EXCHANGE_WEIGHT_LIMIT = 2400  # REQUEST_WEIGHT per minute, BINANCE.md
DEFAULT_CONFIG_PATH = Path("config/websocket.json")

Check = Callable[[Any], "str | None"]


def _opt(default: Any, doc: str, check: Check | None = None) -> Any:
    """A config field: its default, one line of documentation, and an optional check."""
    kwargs: dict[str, Any] = {"metadata": {"doc": doc, "check": check}}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed; use tuples")
    return field(default=default, **kwargs)


def _sub(cls: type, doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc, "check": None})


def positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def fraction(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1)"


def between(low: float, high: float) -> Check:
    def check(value: float) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def _intervals(value: tuple[str, ...]) -> str | None:
    try:
        for item in value:
            check_interval(item)
    except InvalidInterval as exc:
        return str(exc)
    return None if len(set(value)) == len(value) else "has duplicates"


def _symbols(value: tuple[str, ...]) -> str | None:
    try:
        canonical = [check_symbol(item) for item in value]
    except InvalidSymbol as exc:
        return str(exc)
    if canonical != list(value):
        return "symbols must be uppercase"
    return None if len(set(value)) == len(value) else "has duplicates"


def _route(value: str) -> str | None:
    return None if value.startswith("/") and "?" not in value and " " not in value else "must start with /"


def _url(schemes: tuple[str, ...]) -> Check:
    def check(value: str) -> str | None:
        return None if value.split("://", 1)[0] in schemes and "://" in value else f"must be a {'/'.join(schemes)} URL"

    return check


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutesConfig:
    market: str = _opt("/market", "Route of klines, aggTrade and markPrice streams.", _route)
    public: str = _opt("/public", "Route of depth streams.", _route)


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    max_connections: int = _opt(5, "Most WebSocket connections the pool opens.", between(1, 64))
    max_streams_per_connection: int = _opt(
        200, "Most streams on one connection (the exchange allows 1024).", between(1, EXCHANGE_MAX_STREAMS)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectConfig:
    base_delay: float = _opt(1.0, "First reconnect delay, doubled per retry.", positive)
    max_delay: float = _opt(60.0, "Cap on the reconnect delay.", positive)
    jitter_ratio: float = _opt(0.1, "Random spread of each delay (0.1 = +-10 %).", fraction)
    max_retries: int = _opt(10, "Retries per episode before the connection is FAILED.", between(1, 1000))
    failed_retry_interval: float = _opt(
        300.0, "A FAILED connection is tried again after this long (never abandoned).", positive
    )
    max_concurrent_connects: int = _opt(
        2, "Connection attempts in flight across the pool (no reconnect storms).", between(1, 64)
    )
    open_timeout: float = _opt(10.0, "Timeout of the opening handshake.", positive)


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatConfig:
    check_interval: float = _opt(30.0, "How often stream liveness is checked.", positive)
    timeout: float = _opt(60.0, "A stream (or connection) silent this long is missing (lost).", positive)
    resubscribe_after: float = _opt(
        60.0, "A stream still missing this long after it was flagged is resubscribed.", positive
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ToleranceConfig:
    price: float = _opt(0.0001, "Relative tolerance on close/high/low (0.01 %).", fraction)
    volume: float = _opt(0.01, "Relative tolerance on volume (1 %).", fraction)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconciliationConfig:
    kline_interval: float = _opt(300.0, "Kline reconciliation period.", positive)
    depth_interval: float = _opt(60.0, "Order-book snapshot check period.", positive)
    depth_gap_threshold: int = _opt(
        100, "Resync when a snapshot is this many update ids ahead and the book does not catch up.", positive
    )
    aggtrade_interval: float = _opt(
        30.0, "WebSocket-only: 1m bars are checked against the aggTrade window this often (it holds only the "
        "newest aggtrade_max_size trades, so a minute must be checked before its trades are evicted).", positive,
    )
    mismatch_tolerance: ToleranceConfig = _sub(ToleranceConfig, "Tolerances of kline reconciliation.")


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    kline_max_size: int = _opt(500, "Ring-buffer capacity of every kline interval but 1m.", between(1, 10**6))
    kline_1m_history: int = _opt(4000, "Ring-buffer capacity of 1m klines (seed v4.4).", between(1, 10**7))
    aggtrade_max_size: int = _opt(1000, "aggTrade window, count bound.", between(1, 10**7))
    aggtrade_time_window: float = _opt(60.0, "aggTrade window, time bound (exchange seconds).", positive)


@dataclass(frozen=True, slots=True, kw_only=True)
class PingConfig:
    interval: float = _opt(20.0, "Client ping period.", positive)
    timeout: float = _opt(10.0, "A ping unanswered this long means the connection is lost.", positive)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamsConfig:
    kline_intervals: tuple[str, ...] = _opt(
        ("1m", "5m", "15m", "1h", "4h"), "Kline streams subscribed per symbol.", _intervals
    )
    aggtrade: bool = _opt(True, "Subscribe <symbol>@aggTrade.")
    depth: bool = _opt(True, "Subscribe <symbol>@depth and keep a local order book.")
    depth_speed: Literal["100ms", "250ms", "500ms"] = _opt("500ms", "Diff-depth update speed.")
    depth_snapshot_limit: Literal[5, 10, 20, 50, 100, 500, 1000] = _opt(1000, "Levels of REST depth snapshots.")
    mark_price: bool = _opt(True, "Subscribe <symbol>@markPrice@1s.")
    new_listing_intervals: tuple[str, ...] = _opt(
        ("1m", "5m", "15m"), "Kline intervals subscribed for new listings (seed §11).", _intervals
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class WebsocketConfig:
    base_url: str = _opt("wss://fstream.binance.com", "WebSocket base URL.", _url(("ws", "wss")))
    rest_url: str = _opt("https://fapi.binance.com", "REST base URL.", _url(("http", "https")))
    routes: RoutesConfig = _sub(RoutesConfig, "Routed URL prefixes.")
    connection_pool: PoolConfig = _sub(PoolConfig, "Connection pool.")
    reconnect: ReconnectConfig = _sub(ReconnectConfig, "Reconnect backoff.")
    heartbeat: HeartbeatConfig = _sub(HeartbeatConfig, "Stream liveness.")
    reconciliation: ReconciliationConfig = _sub(ReconciliationConfig, "Reconciliation.")
    cache: CacheConfig = _sub(CacheConfig, "In-memory buffers.")
    ping: PingConfig = _sub(PingConfig, "Keepalive pings.")
    streams: StreamsConfig = _sub(StreamsConfig, "What is subscribed.")
    rotate_after: float = _opt(
        23.5 * 3600, "Replace a connection this long after it opened (the exchange closes at 24 h).", positive
    )
    control_messages_per_second: float = _opt(
        5.0, "Control messages (SUBSCRIBE...) per second per connection (the exchange closes at 10).",
        between(0.1, 9),
    )
    max_queue: int = _opt(4096, "Frames buffered per connection before backpressure.", between(16, 10**6))
    read_coalesce: float = _opt(
        0.0, "When socket reads come in quick succession, wait this long before the next, so frames "
        "that trickle in one at a time are handled in batches (less CPU, at most this much added latency); "
        "0 reads at once.", between(0, 0.1),
    )
    control_timeout: float = _opt(
        10.0, "A SUBSCRIBE/UNSUBSCRIBE unanswered this long means the connection is lost.", positive
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ModesConfig:
    websocket_only_klines: bool = _opt(True, "Never call REST klines (env WEBSOCKET_ONLY_KLINES).")
    disable_rest_fallback: bool = _opt(True, "No REST back-fill or reconciliation (env DISABLE_REST_FALLBACK).")

    @property
    def rest_klines_allowed(self) -> bool:
        """The three-layer fallback needs both switches off (seed v4.4)."""
        return not self.websocket_only_klines and not self.disable_rest_fallback

    @property
    def name(self) -> str:
        return "fallback" if self.rest_klines_allowed else "websocket_only"


@dataclass(frozen=True, slots=True, kw_only=True)
class RestConfig:
    weight_limit: int = _opt(EXCHANGE_WEIGHT_LIMIT, "Exchange request-weight limit per minute.", positive)
    weight_margin: float = _opt(0.25, "Share of the weight limit never used (safety margin).", fraction)
    timeout: float = _opt(10.0, "Timeout of one REST request.", positive)
    max_retries: int = _opt(3, "Retries of a failed REST request (5xx, timeouts, 429).", between(0, 20))
    retry_base_delay: float = _opt(0.5, "First delay before a REST retry, doubled per retry.", positive)
    retry_max_delay: float = _opt(10.0, "Cap on the REST retry delay.", positive)


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    data_dir: str = _opt("data", "Data directory (env KLINESTORE_DATA_DIR).")
    flush_interval: float = _opt(60.0, "Closed bars reach Parquet within this long.", positive)
    wal_fsync_window: float = _opt(1.0, "WAL appends are fsynced in batches within this window.", between(0, 1))
    compaction_interval: float = _opt(600.0, "Compaction period.", positive)
    compaction_min_files: int = _opt(8, "A partition is compacted once it holds this many files.", between(2, 10**4))
    compaction_grace: float = _opt(
        60.0, "Compacted-away files stay readable this long, so queries already running finish.", non_negative
    )
    resample_intervals: tuple[str, ...] = _opt(
        ("5m", "15m", "1h", "4h"), "Intervals resampled from 1m and persisted.", _intervals
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsConfig:
    dataqual_interval: float = _opt(30.0, "DataQual scores are recorded this often.", positive)
    publish_interval: float = _opt(30.0, "DataQual tables are published as Parquet this often.", positive)
    listing_refresh_interval: float = _opt(300.0, "exchangeInfo refresh (new listings) period.", positive)
    status_interval: float = _opt(5.0, "status.json is rewritten this often.", positive)
    gap_check_interval: float = _opt(
        60.0, "Open gap records are checked against storage this often (an import or a back-fill closes them).",
        positive,
    )
    dataqual_half_life: float = _opt(
        900.0, "DataQual: a reconciliation mismatch or order-book resync weighs half as much after this long "
        "(exchange seconds).", positive,
    )
    stale_after: float = _opt(
        30.0, "DataQual: a symbol is stale once its next 1m bar is this late (exchange seconds).", positive
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertsConfig:
    max_reconnects_per_hour: int = _opt(
        5, "More connection losses than this within reconnect_window raise an alert.", non_negative
    )
    reconnect_window: float = _opt(3600.0, "The window of max_reconnects_per_hour (exchange seconds).", positive)
    warming_up_max: float = _opt(
        90 * 60.0, "A series warming_up longer than this (exchange seconds; and past its first possible close) "
        "raises an alert.", positive,
    )
    dataqual_min: float = _opt(0.90, "A DataQual score below this raises an alert.", between(0, 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    enabled: bool = _opt(False, "Serve Prometheus metrics.")
    host: Literal["127.0.0.1", "::1", "localhost"] = _opt("127.0.0.1", "Metrics bind address (loopback only).")
    port: int = _opt(9464, "Metrics port (0 picks a free one).", between(0, 65535))


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardingConfig:
    shard_id: int = _opt(0, "This process's shard (symbols hashed by name).", non_negative)
    num_shards: int = _opt(1, "Number of ingest shards writing one dataset.", between(1, 4096))


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    symbols: tuple[str, ...] = _opt(("BTCUSDT", "ETHUSDT"), "Symbols to ingest.", _symbols)
    websocket: WebsocketConfig = _sub(WebsocketConfig, "Exchange connections (seed v6.4 §9).")
    modes: ModesConfig = _sub(ModesConfig, "WebSocket-only or fallback (seed v4.4).")
    rest: RestConfig = _sub(RestConfig, "REST client.")
    storage: StorageConfig = _sub(StorageConfig, "Disk.")
    jobs: JobsConfig = _sub(JobsConfig, "Scheduled jobs.")
    alerts: AlertsConfig = _sub(AlertsConfig, "Alert thresholds (seed v4.4).")
    metrics: MetricsConfig = _sub(MetricsConfig, "Prometheus endpoint.")
    sharding: ShardingConfig = _sub(ShardingConfig, "Ingest sharding by symbol.")

    def __post_init__(self) -> None:
        if self.sharding.shard_id >= self.sharding.num_shards:
            raise ConfigError("sharding.shard_id", "must be < sharding.num_shards")
        if self.websocket.reconnect.max_delay < self.websocket.reconnect.base_delay:
            raise ConfigError("websocket.reconnect.max_delay", "must be >= base_delay")

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir)

    def replace(self, **changes: Any) -> Config:
        """A copy with dotted keys changed, validated like a file: ``replace(**{"storage.data_dir": p})``."""
        return _apply(self, changes)


# --- loading ---------------------------------------------------------------------------------

_ENV_BOOLS = {"WEBSOCKET_ONLY_KLINES": "modes.websocket_only_klines", "DISABLE_REST_FALLBACK": "modes.disable_rest_fallback"}


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load the config: defaults, then the file, then environment, then ``overrides`` (dotted keys)."""
    env = os.environ if env is None else env
    if path is None and env.get("KLINESTORE_CONFIG"):
        path = env["KLINESTORE_CONFIG"]
        if not Path(path).is_file():
            raise ConfigError("KLINESTORE_CONFIG", f"no such file: {path}")
    elif path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    data: Mapping[str, Any] = {}
    if path is not None:
        data = _read_json(Path(path))
    config = config_from_dict(data)
    changes: dict[str, Any] = {}
    for name, key in _ENV_BOOLS.items():
        if name in env:
            changes[key] = _env_bool(name, env[name])
    if env.get("KLINESTORE_DATA_DIR"):
        changes["storage.data_dir"] = env["KLINESTORE_DATA_DIR"]
    changes.update(overrides or {})
    return _apply(config, changes) if changes else config


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build a :class:`Config` from a parsed JSON object, strictly."""
    if not isinstance(data, Mapping):
        raise ConfigError("", "the top level must be a JSON object")
    return _build(Config, data, "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON-able data (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = config_to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def config_reference(cls: type = Config, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """Every leaf key as ``(dotted key, type, default, doc)``: the README's reference table."""
    rows: list[tuple[str, str, Any, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(config_reference(tp, key + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((key, _type_name(tp), default, f.metadata.get("doc", "")))
    return rows


def _read_json(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("", f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _env_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"expected true or false, got {raw!r}")


def _apply(config: Config, changes: Mapping[str, Any]) -> Config:
    data = config_to_dict(config)
    for key, value in changes.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(key, "unknown key")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(key, "unknown key")
        node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    return config_from_dict(data)


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            near = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"{prefix}{key}", f"unknown key{hint}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(key, f"expected an object, got {_json_type(value)}")
            kwargs[name] = _build(tp, value, key + ".")
            continue
        converted = _convert(tp, value, key)
        check = fields[name].metadata.get("check")
        problem = check(converted) if check else None
        if problem:
            raise ConfigError(key, f"{problem} (got {value!r})")
        kwargs[name] = converted
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix and not exc.key.startswith(prefix):
            raise ConfigError(prefix + exc.key, str(exc).split(": ", 1)[-1]) from None
        raise


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        raise ConfigError(key, f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
    elif origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        if isinstance(value, list):
            return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
        raise ConfigError(key, f"expected a list, got {_json_type(value)}")
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
        inner = [o for o in typing.get_args(tp) if o is not type(None)]
        return _convert(inner[0], value, key)
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported config type {tp!r} at {key}")
    raise ConfigError(key, f"expected {_type_name(tp)}, got {_json_type(value)} {value!r}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(json.dumps(c) for c in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(tp, str(tp))


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null"
    return "object"
