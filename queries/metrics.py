"""Prometheus metrics from the service's snapshot: one source of truth with status.json.

The service passes :func:`start_metrics_server` the same callable that builds status.json;
a custom collector calls it on every scrape and turns it into metrics, so the endpoint and
the status file can never disagree and nothing is counted twice. The server binds loopback
only (``MetricsConfig.host`` is limited to loopback by config validation, and checked again
here); ``port = 0`` picks a free port, returned to the caller.

Metrics (all prefixed ``klinestore_``): ``up``, ``messages_total``, ``rejected_total{reason}``,
``reconnects_total``, ``closed_bars_total``, ``connection_up{conn_id,route}``,
``connection_last_message_age_seconds{conn_id}``, ``stream_staleness_seconds{stream}``,
``missing_streams``, ``stream_missing{symbol,stream}``, ``quiet_streams``, ``stream_quiet{symbol,stream}``,
``dataqual_score{symbol}``,
``flush_lag_seconds``, ``wal_pending_bars``, ``wal_segments``, ``wal_bytes``,
``rest_weight_used``, ``rest_weight_limit``, ``rest_calls_total{endpoint}``,
``rest_weight_total{endpoint}``, ``warming_up_series``, ``alerts``, ``uptime_seconds``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from klinestore.core.errors import ConfigError
from klinestore.queries.config import MetricsConfig
from klinestore.queries.fields import as_dict, as_list, as_number, dataqual_scores, last_flush_ms

log = logging.getLogger(__name__)
PREFIX = "klinestore"
Snapshot = Callable[[], Mapping[str, Any]]
_UP_STATES = {"SUBSCRIBED", "CONNECTED"}


class SnapshotCollector(Collector):
    """Metrics from one snapshot per scrape (a snapshot that fails to build reports ``up 0``)."""

    def __init__(self, snapshot: Snapshot, *, clock: Callable[[], float] = time.time) -> None:
        self.snapshot = snapshot
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        try:
            data = dict(self.snapshot())
        except Exception:  # noqa: BLE001 - a scrape must never take the service down
            log.exception("metrics snapshot failed")
            yield _gauge("up", "1 when the service's snapshot could be read.", 0)
            return
        yield _gauge("up", "1 when the service's snapshot could be read.", 1)
        yield from self._counters(as_dict(data.get("counters")))
        yield from self._connections(data)
        yield from self._quality(data)
        yield from self._storage(data)
        yield from self._rest(data)

    def _counters(self, counters: dict[str, Any]) -> Iterator[Metric]:
        for key, doc in (("messages", "WebSocket messages received."), ("reconnects", "Reconnects of all connections."),
                         ("closed_bars", "Closed klines accepted.")):
            value = as_number(counters.get(key))
            if value is not None:
                yield CounterMetricFamily(f"{PREFIX}_{key}", doc, value=value)
        rejected = CounterMetricFamily(f"{PREFIX}_rejected", "Messages or bars rejected, by reason.", labels=["reason"])
        for reason, count in sorted(as_dict(counters.get("rejected")).items()):
            if as_number(count) is not None:
                rejected.add_metric([str(reason)], float(count))
        yield rejected

    def _connections(self, data: dict[str, Any]) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_connection_up", "1 when a connection is subscribed.", labels=["conn_id", "route"])
        age = GaugeMetricFamily(f"{PREFIX}_connection_last_message_age_seconds",
                                "Seconds since a connection's last message.", labels=["conn_id"])
        for conn in (c for c in as_list(data.get("connections")) if isinstance(c, dict)):
            conn_id = str(conn.get("id", "?"))
            up.add_metric([conn_id, str(conn.get("route", ""))], 1.0 if conn.get("state") in _UP_STATES else 0.0)
            seconds = as_number(conn.get("last_message_age_s"))
            if seconds is not None:
                age.add_metric([conn_id], seconds)
        yield up
        yield age
        staleness = GaugeMetricFamily(f"{PREFIX}_stream_staleness_seconds", "Seconds since a stream's last message.",
                                      labels=["stream"])
        for stream, value in sorted(_stream_ages(data).items()):
            staleness.add_metric([stream], value)
        yield staleness
        missing = as_dict(data.get("missing_streams"))
        flagged = GaugeMetricFamily(f"{PREFIX}_stream_missing", "1 for each stream silent past the heartbeat timeout.",
                                    labels=["symbol", "stream"])
        for symbol, streams in sorted(missing.items()):
            for stream in as_list(streams):
                flagged.add_metric([str(symbol), str(stream)], 1.0)
        yield flagged
        yield _gauge("missing_streams", "Streams silent past the heartbeat timeout while data was due.",
                     sum(len(as_list(v)) for v in missing.values()))
        quiet = as_dict(data.get("quiet_streams"))
        calm = GaugeMetricFamily(f"{PREFIX}_stream_quiet",
                                 "1 for each stream silent because its market had nothing to report (no alarm).",
                                 labels=["symbol", "stream"])
        for symbol, streams in sorted(quiet.items()):
            for stream in as_list(streams):
                calm.add_metric([str(symbol), str(stream)], 1.0)
        yield calm
        yield _gauge("quiet_streams", "Streams silent past the heartbeat timeout with nothing due (quiet market).",
                     sum(len(as_list(v)) for v in quiet.values()))

    def _quality(self, data: dict[str, Any]) -> Iterator[Metric]:
        score = GaugeMetricFamily(f"{PREFIX}_dataqual_score", "DataQual score per symbol, 0..1.", labels=["symbol"])
        for row in dataqual_scores(data):
            value = as_number(row.get("score"))
            if value is not None:
                score.add_metric([str(row["symbol"])], value)
        yield score
        yield _gauge("warming_up_series", "Symbol/interval series still warming up.", len(as_list(data.get("warming_up"))))
        yield _gauge("alerts", "Alerts the service currently raises.", len(as_list(data.get("alerts"))))
        uptime = as_number(data.get("uptime_s"))
        if uptime is not None:
            yield _gauge("uptime_seconds", "Seconds since the service started.", uptime)

    def _storage(self, data: dict[str, Any]) -> Iterator[Metric]:
        flushed = last_flush_ms(data)
        if flushed is not None:
            yield _gauge("flush_lag_seconds", "Seconds since the last flush to Parquet.",
                         max(0.0, self.clock() - flushed / 1000))
        wal = as_dict(data.get("wal"))
        pending = as_number(wal.get("pending_bars", as_dict(data.get("storage")).get("pending_bars")))
        if pending is not None:
            yield _gauge("wal_pending_bars", "Closed bars in the WAL not yet in Parquet.", pending)
        for key, doc in (("segments", "WAL segments on disk."), ("bytes", "WAL bytes on disk.")):
            value = as_number(wal.get(key))
            if value is not None:
                yield _gauge(f"wal_{key}", doc, value)

    def _rest(self, data: dict[str, Any]) -> Iterator[Metric]:
        rest = as_dict(data.get("rest"))
        for key, name, doc in (("weight_used", "rest_weight_used", "REST request weight used this minute."),
                               ("weight_usable", "rest_weight_limit", "REST request weight usable per minute.")):
            value = as_number(rest.get(key))
            if value is not None:
                yield _gauge(name, doc, value)
        calls = CounterMetricFamily(f"{PREFIX}_rest_calls", "REST calls by endpoint.", labels=["endpoint"])
        weight = CounterMetricFamily(f"{PREFIX}_rest_weight", "REST request weight spent by endpoint.", labels=["endpoint"])
        for endpoint, entry in sorted(as_dict(data.get("ledger")).items()):
            entry = as_dict(entry)
            if as_number(entry.get("calls")) is not None:
                calls.add_metric([str(endpoint)], float(entry["calls"]))
            if as_number(entry.get("weight")) is not None:
                weight.add_metric([str(endpoint)], float(entry["weight"]))
        yield calls
        yield weight


def start_metrics_server(config: MetricsConfig, snapshot: Snapshot) -> tuple[str, int, Callable[[], None]]:
    """Serve ``/metrics`` on loopback from ``snapshot``; returns ``(host, port, stop)``.

    ``port = 0`` binds a free port (the one returned). Raises :class:`ConfigError` for a host
    that is not a loopback address: the endpoint has no authentication.
    """
    host = loopback_address(config.host)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    try:
        server, thread = start_http_server(config.port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError("metrics.port", f"cannot listen on {host}:{config.port}: {exc.strerror}") from None
    port = int(server.server_address[1])

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    log.info("metrics on http://%s:%d/metrics", host, port)
    return host, port, stop


def loopback_address(host: str) -> str:
    """``host`` as a loopback IP literal, or :class:`ConfigError` (``localhost`` must resolve to loopback)."""
    try:
        candidates = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except socket.gaierror:
        raise ConfigError("metrics.host", f"cannot resolve {host!r}") from None
    if not candidates or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in candidates):
        raise ConfigError("metrics.host", f"{host!r} is not a loopback address; metrics are served on loopback only")
    return "127.0.0.1" if "127.0.0.1" in candidates else sorted(candidates)[0]


def _stream_ages(data: dict[str, Any]) -> dict[str, float]:
    """Seconds since each stream's last message: the snapshot's per-stream ages when it has them."""
    out: dict[str, float] = {}
    for key in ("stream_ages", "streams"):
        for stream, value in as_dict(data.get(key)).items():
            age = as_number(value.get("last_message_age_s")) if isinstance(value, dict) else as_number(value)
            if age is not None:
                out[str(stream)] = age
    return out


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=float(value))
