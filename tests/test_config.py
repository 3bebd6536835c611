"""Config: seed defaults, strict keys with the key named, environment overrides."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from klinestore.config import Config, config_from_dict, config_reference, config_to_dict, load_config
from klinestore.core.errors import ConfigError
from support import klinestore_command, subprocess_env

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_seeds() -> None:
    c = Config()
    ws = c.websocket
    assert (ws.connection_pool.max_connections, ws.connection_pool.max_streams_per_connection) == (None, 200)
    assert (ws.reconnect.base_delay, ws.reconnect.max_delay, ws.reconnect.jitter_ratio, ws.reconnect.max_retries) == (1.0, 60.0, 0.1, 10)
    assert (ws.heartbeat.check_interval, ws.heartbeat.timeout) == (30.0, 60.0)
    assert (ws.reconciliation.kline_interval, ws.reconciliation.depth_interval) == (300.0, 60.0)
    assert (ws.reconciliation.mismatch_tolerance.price, ws.reconciliation.mismatch_tolerance.volume) == (0.0001, 0.01)
    assert (ws.cache.kline_max_size, ws.cache.kline_1m_history, ws.cache.aggtrade_max_size, ws.cache.aggtrade_time_window) == (500, 4000, 1000, 60.0)
    assert (ws.ping.interval, ws.ping.timeout) == (20.0, 10.0)
    assert ws.streams.new_listing_intervals == ("1m", "5m", "15m")
    assert c.modes.websocket_only_klines and c.modes.disable_rest_fallback and c.modes.name == "websocket_only"
    assert c.storage.flush_interval == 60.0 and c.storage.wal_fsync_window <= 1.0


def test_shipped_config_file_loads_and_uses_todays_urls() -> None:
    c = load_config(ROOT / "config/websocket.json", env={})
    assert c.websocket.base_url == "wss://fstream.binance.com"
    assert c.websocket.rest_url == "https://fapi.binance.com"
    assert (c.websocket.routes.market, c.websocket.routes.public) == ("/market", "/public")


def test_config_is_frozen() -> None:
    with pytest.raises(Exception):
        Config().symbols = ("X",)  # type: ignore[misc]


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"websocket": {"reconect": {}}}, "websocket.reconect", "did you mean 'reconnect'"),
        ({"websocket": {"reconnect": {"base_delay": "1s"}}}, "websocket.reconnect.base_delay", "expected number"),
        ({"websocket": {"reconnect": {"jitter_ratio": 1.5}}}, "websocket.reconnect.jitter_ratio", "[0, 1)"),
        ({"websocket": {"connection_pool": {"max_streams_per_connection": 1025}}},
         "websocket.connection_pool.max_streams_per_connection", "between 1 and 1024"),
        ({"websocket": {"connection_pool": {"max_connections": True}}}, "websocket.connection_pool.max_connections", "expected integer"),
        ({"websocket": {"streams": {"kline_intervals": ["1m", "7m"]}}}, "websocket.streams.kline_intervals", "unknown interval"),
        ({"websocket": {"streams": {"depth_speed": "1ms"}}}, "websocket.streams.depth_speed", "expected one of"),
        ({"websocket": {"base_url": "http://x"}}, "websocket.base_url", "ws/wss URL"),
        ({"symbols": ["BTCUSDT", "../../etc/passwd"]}, "symbols", "invalid symbol"),
        ({"symbols": "BTCUSDT"}, "symbols", "expected a list"),
        ({"symbols": ["btcusdt"]}, "symbols", "uppercase"),
        ({"metrics": {"host": "0.0.0.0"}}, "metrics.host", "expected one of"),
        ({"sharding": {"shard_id": 2, "num_shards": 2}}, "sharding.shard_id", "must be <"),
        ({"websocket": 5}, "websocket", "expected an object"),
        ({"nope": 1}, "nope", "unknown key"),
    ],
)
def test_bad_config_names_the_key(data: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert info.value.key == key
    assert words in str(info.value)
    assert key in str(info.value)


def test_environment_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"storage": {"data_dir": "from-file"}, "modes": {"websocket_only_klines": True}}))
    env = {"KLINESTORE_CONFIG": str(path), "WEBSOCKET_ONLY_KLINES": "false", "DISABLE_REST_FALLBACK": "FALSE"}
    c = load_config(env=env)
    assert c.modes.name == "fallback"
    assert c.storage.data_dir == "from-file"
    assert load_config(env={**env, "KLINESTORE_DATA_DIR": "/tmp/elsewhere"}).storage.data_dir == "/tmp/elsewhere"
    with pytest.raises(ConfigError, match="WEBSOCKET_ONLY_KLINES"):
        load_config(env={"WEBSOCKET_ONLY_KLINES": "maybe"})
    with pytest.raises(ConfigError, match="KLINESTORE_CONFIG"):
        load_config(env={"KLINESTORE_CONFIG": str(tmp_path / "missing.json")})


def test_one_switch_off_is_still_websocket_only() -> None:
    c = load_config(env={"WEBSOCKET_ONLY_KLINES": "false"}, path=None)
    assert c.modes.name == "websocket_only" and not c.modes.rest_klines_allowed


def test_bad_json_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"symbols": [')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path, env={})


def test_overrides_and_round_trip() -> None:
    c = load_config(env={}, overrides={"storage.flush_interval": 0.5, "symbols": ["SOLUSDT"]})
    assert c.storage.flush_interval == 0.5 and c.symbols == ("SOLUSDT",)
    assert config_from_dict(config_to_dict(c)) == c
    with pytest.raises(ConfigError, match="storage.flush_intervl"):
        c.replace(**{"storage.flush_intervl": 1})


def test_reference_documents_every_key() -> None:
    rows = config_reference()
    assert all(doc for _, _, _, doc in rows)
    keys = {key for key, *_ in rows}
    assert "websocket.reconnect.base_delay" in keys and "modes.websocket_only_klines" in keys


@pytest.mark.parametrize(("text", "key", "words"), [
    ('{"storage": {"flush_interval": 1e308}}', "storage.flush_interval", "at most"),
    ('{"storage": {"flush_interval": Infinity}}', "storage.flush_interval", "finite"),
    ('{"storage": {"compaction_grace": -Infinity}}', "storage.compaction_grace", "finite"),
    ('{"jobs": {"status_interval": 1e400}}', "jobs.status_interval", "finite"),
    ('{"storage": {"compaction_interval": NaN}}', "storage.compaction_interval", "finite"),
    ('{"storage": {"compaction_interval": 100000000000000000000000000000000000}}', "storage.compaction_interval",
     "at most"),
    ('{"rest": {"weight_limit": 99999999999}}', "rest.weight_limit", "at most"),
    ('{"sharding": {"shard_id": 100000000000000000000000000}}', "sharding.shard_id", "out of range"),
    ('{"websocket": {"reconnect": {"failed_retry_interval": 31536000}}}', "websocket.reconnect.failed_retry_interval",
     "at most"),
])
def test_numbers_out_of_any_sane_range_are_refused_naming_the_key(tmp_path: Path, text: str, key: str,
                                                                  words: str) -> None:
    """Issue 14 case 6: these ended in OverflowError tracebacks when the service scheduled its timers."""
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as caught:
        load_config(path, env={})
    assert caught.value.key == key


@pytest.mark.parametrize("where", ["proc", "file", "wal_file"])
def test_a_data_dir_that_cannot_be_one_is_refused_in_one_line(tmp_path: Path, where: str) -> None:
    """Issue 14 case 6: /proc/self, a file, or a file where wal/s0000 belongs ended in tracebacks."""
    from klinestore.config import StorageConfig
    from klinestore.storage import BarStore
    from klinestore.storage.errors import StorageError

    data = {"proc": Path("/proc/self"), "file": tmp_path / "f", "wal_file": tmp_path / "d"}[where]
    if where == "file":
        data.write_text("")
    if where == "wal_file":
        (data / "wal").mkdir(parents=True)
        (data / "wal" / "s0000").write_text("")
    with pytest.raises(StorageError, match="directory") as caught:
        BarStore(data, StorageConfig()).open()
    assert "\n" not in str(caught.value)
    done = subprocess.run(klinestore_command("run", "--data-dir", str(data), "--ws-url", "ws://127.0.0.1:9",
                                             "--rest-url", "http://127.0.0.1:9", "--for", "1"),
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("klinestore run: error: ")
