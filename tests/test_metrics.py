"""The Prometheus endpoint: metrics from a synthetic snapshot over loopback HTTP; loopback only."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from klinestore.config import MetricsConfig, config_from_dict
from klinestore.core.errors import ConfigError
from klinestore.queries.metrics import start_metrics_server


def snapshot() -> dict[str, Any]:
    return {
        "mode": "websocket_only", "uptime_s": 12.5,
        "connections": [
            {"id": "market-0", "route": "market", "state": "SUBSCRIBED", "streams": 10, "last_message_age_s": 0.25},
            {"id": "public-1", "route": "public", "state": "RECONNECTING", "streams": 2, "last_message_age_s": None},
        ],
        "missing_streams": {"ETHUSDT": ["ethusdt@depth@500ms"]},
        "stream_ages": {"btcusdt@kline_1m": 0.4, "ethusdt@depth@500ms": 75.0},
        "counters": {"messages": 1234, "rejected": {"duplicate": 3, "stale": 1}, "reconnects": 2, "closed_bars": 99},
        "dataqual": {"BTCUSDT": {"score": 0.98, "reasons": ""}, "ETHUSDT": 0.9},
        "storage": {"last_flush": time.time() - 7, "pending_bars": 5},
        "wal": {"segments": 2, "bytes": 4096},
        "rest": {"weight_used": 41, "weight_usable": 1800},
        "ledger": {"/fapi/v1/depth": {"calls": 2, "weight": 40}, "/fapi/v1/time": {"calls": 1, "weight": 1}},
        "warming_up": [{"symbol": "ETHUSDT", "interval": "4h"}],
        "alerts": ["one"],
    }


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_from_the_snapshot_over_loopback() -> None:
    calls = []

    def source() -> dict[str, Any]:
        calls.append(1)
        return snapshot()

    host, port, stop = start_metrics_server(MetricsConfig(enabled=True, port=0), source)
    try:
        assert host == "127.0.0.1" and port > 0
        m = scrape(port)
        assert m[("klinestore_up", ())] == 1
        assert m[("klinestore_messages_total", ())] == 1234
        assert m[("klinestore_rejected_total", (("reason", "duplicate"),))] == 3
        assert m[("klinestore_reconnects_total", ())] == 2
        assert m[("klinestore_connection_up", (("conn_id", "public-1"), ("route", "public")))] == 0
        assert m[("klinestore_connection_last_message_age_seconds", (("conn_id", "market-0"),))] == 0.25
        assert m[("klinestore_stream_staleness_seconds", (("stream", "ethusdt@depth@500ms"),))] == 75
        assert m[("klinestore_missing_streams", ())] == 1
        assert m[("klinestore_dataqual_score", (("symbol", "ETHUSDT"),))] == 0.9
        assert 6 <= m[("klinestore_flush_lag_seconds", ())] < 30
        assert m[("klinestore_wal_pending_bars", ())] == 5 and m[("klinestore_wal_bytes", ())] == 4096
        assert m[("klinestore_rest_weight_used", ())] == 41
        assert m[("klinestore_rest_weight_total", (("endpoint", "/fapi/v1/depth"),))] == 40
        assert m[("klinestore_warming_up_series", ())] == 1 and m[("klinestore_alerts", ())] == 1
        scrape(port)
        assert len(calls) == 2  # one snapshot per scrape: the same numbers status.json shows
    finally:
        stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_failing_snapshot_reports_down_and_keeps_serving() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    _, port, stop = start_metrics_server(MetricsConfig(port=0), broken)
    try:
        assert scrape(port)[("klinestore_up", ())] == 0
        assert scrape(port)[("klinestore_up", ())] == 0
    finally:
        stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "8.8.8.8"])
def test_refuses_a_non_loopback_bind(host: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        start_metrics_server(MetricsConfig(host=host, port=0), snapshot)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="metrics.host"):
        config_from_dict({"metrics": {"host": host}})


def test_localhost_is_loopback() -> None:
    host, port, stop = start_metrics_server(MetricsConfig(host="localhost", port=0), snapshot)
    stop()
    assert host in ("127.0.0.1", "::1")
