"""The application's config: every package's typed section composed into one, loaded once, strictly.

Precedence, lowest first: the defaults, the JSON file (``config/websocket.json`` or
``KLINESTORE_CONFIG``), environment variables, then command-line overrides. An unknown key
or a bad value raises :class:`ConfigError` naming the dotted key, so a typo never silently
falls back to a default (cryptofeed's config dicts swallow typos; ours do not).

Each section is declared by the package that reads it (``klinestore.ingest.config``,
``klinestore.storage.config``, ``klinestore.jobs.config``, ``klinestore.queries.config``);
this module composes them and is the only place that reads files and the environment for
the service. Durations are seconds (floats) everywhere, so tests scale every timer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klinestore.core.errors import ConfigError
from klinestore.core.options import build, opt, read_json, reference, sub, symbols, to_dict
from klinestore.ingest.config import (
    EXCHANGE_MAX_STREAMS,
    EXCHANGE_WEIGHT_LIMIT,
    CacheConfig,
    HeartbeatConfig,
    ModesConfig,
    PingConfig,
    PoolConfig,
    ReconciliationConfig,
    ReconnectConfig,
    RestConfig,
    RoutesConfig,
    StreamsConfig,
    ToleranceConfig,
    WebsocketConfig,
)
from klinestore.gateway.config import GatewayConfig
from klinestore.jobs.config import AlertsConfig, JobsConfig
from klinestore.queries.config import MetricsConfig
from klinestore.storage.config import DEFAULT_CONFIG_PATH, ShardingConfig, StorageConfig, config_file

__all__ = [
    "DEFAULT_CONFIG_PATH", "EXCHANGE_MAX_STREAMS", "EXCHANGE_WEIGHT_LIMIT", "AlertsConfig", "CacheConfig", "Config",
    "GatewayConfig",
    "HeartbeatConfig", "JobsConfig", "MetricsConfig", "ModesConfig", "PingConfig", "PoolConfig",
    "ReconciliationConfig", "ReconnectConfig", "RestConfig", "RoutesConfig", "ShardingConfig", "StorageConfig",
    "StreamsConfig", "ToleranceConfig", "WebsocketConfig", "config_from_dict", "config_reference", "config_to_dict",
    "load_config",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    symbols: tuple[str, ...] = opt(("BTCUSDT", "ETHUSDT"), "Symbols to ingest.", symbols)
    websocket: WebsocketConfig = sub(WebsocketConfig, "Exchange connections (seed v6.4 §9).")
    modes: ModesConfig = sub(ModesConfig, "WebSocket-only or fallback (seed v4.4).")
    rest: RestConfig = sub(RestConfig, "REST client.")
    storage: StorageConfig = sub(StorageConfig, "Disk.")
    jobs: JobsConfig = sub(JobsConfig, "Scheduled jobs.")
    alerts: AlertsConfig = sub(AlertsConfig, "Alert thresholds (seed v4.4).")
    metrics: MetricsConfig = sub(MetricsConfig, "Prometheus endpoint.")
    sharding: ShardingConfig = sub(ShardingConfig, "Ingest sharding by symbol.")
    gateway: GatewayConfig = sub(GatewayConfig, "Local Binance-compatible API (docs/gateway.md).")

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
    if path is None:
        path = config_file(env)
    data: Mapping[str, Any] = {}
    if path is not None:
        data = read_json(Path(path))
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
    return build(Config, data, "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON-able data (tuples become lists)."""
    return to_dict(config)


def config_reference(cls: type = Config, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """Every leaf key as ``(dotted key, type, default, doc)``: the README's reference table."""
    return reference(cls, prefix)


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
