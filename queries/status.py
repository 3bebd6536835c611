"""What ``klinestore status`` reports: the service's own snapshot plus what is on disk.

Three sources, each optional, so status works from another process while the service runs,
after it stopped, and on a data directory no service ever wrote:

* ``<data_dir>/status.json``, written atomically by the service every ``status_interval_s``
  (connections, streams, counters, readiness, REST ledger; later versions add DataQual,
  alerts, jobs, WAL). Fields are read defensively: an older or newer service may lack some
  or carry more, and everything unknown is passed through under ``status_json``;
* the published DataQual tables (latest score per symbol) when status.json has none;
* the dataset itself: per interval the partitions (months or years), files, bytes and newest bar, and the WAL.

The snapshot is *stale* when its own ``written_at`` is older than ``STALE_INTERVALS`` status
intervals: the service is probably not running. :func:`exit_code` turns the report into the
command's exit status.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from klinestore.core.intervals import interval_sort_key
from klinestore.core.symbols import check_symbol
from klinestore.queries.errors import QueryError
from klinestore.queries.fields import as_dict, as_list, as_number, dataqual_scores, epoch_ms, last_flush_ms
from klinestore.queries.sql import connect, execute
from klinestore.queries.times import iso
from klinestore.storage import Dataset, Partition, quarantine_records, shard_writer, writer_slot

STATUS_FILE = "status.json"
STALE_INTERVALS = 3
MIN_STALE_S = 10.0
DEFAULT_STATUS_INTERVAL_S = 5.0

EXIT_OK = 0
EXIT_NOT_RUNNING = 3
EXIT_DEGRADED = 4

_BAD_STATES = {"FAILED"}
_SHAKY_STATES = {"LOST", "RECONNECTING", "CONNECTING", "DISCONNECTED"}


def status_files(data_dir: Path | str) -> dict[int | None, Path]:
    """The service status files in ``data_dir``: ``None`` for a lone service's status.json,
    the shard id for each ``status-sNNNN.json`` of a sharded ingest (config ``sharding``)."""
    data_dir = Path(data_dir)
    found: dict[int | None, Path] = {}
    if (data_dir / STATUS_FILE).is_file():
        found[None] = data_dir / STATUS_FILE
    for path in sorted(data_dir.glob("status-s[0-9][0-9][0-9][0-9].json")):
        found[writer_slot(path.stem.removeprefix("status-"))] = path
    return found


def read_status(
    data_dir: Path | str, *, now_ms: int | None = None, dataqual_min: float = 0.9, shard: int | None = None,
    market: str = "um",
) -> dict[str, Any]:
    """The status report of ``data_dir`` as plain JSON-able data (what ``--json`` prints).

    ``shard`` reads shard N's ``status-sNNNN.json`` (several ingest shards in one data
    directory) instead of the lone service's status.json.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise QueryError(f"no data directory at {data_dir} (give --data-dir or set KLINESTORE_DATA_DIR)")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    name = STATUS_FILE if shard is None else f"status-{shard_writer(shard)}.json"
    raw, service = _service(data_dir / name, now)
    live = service["state"] == "running"
    report: dict[str, Any] = {
        "data_dir": str(data_dir),
        "checked_at": iso(now),
        "service": service,
        "connections": as_list(raw.get("connections")) if live else [],
        "streams": _streams(raw) if live else None,
        "counters": as_dict(raw.get("counters")),
        "timeframes": as_dict(raw.get("timeframes")),
        "warming_up": as_list(raw.get("warming_up")),
        "dataqual": _dataqual(raw, data_dir),
        "storage": _storage(raw, data_dir, now),
        "ledger": as_dict(raw.get("ledger")),
        "rest": as_dict(raw.get("rest")),
        "jobs": as_dict(raw.get("jobs")),
        "market": market,
        "dataset": dataset_summary(data_dir, int(as_number(raw.get("exchange_time_ms")) or now), market),
    }
    report["alerts"] = alerts(report, raw, dataqual_min=dataqual_min)
    report["status_json"] = raw or None
    if shard is not None:
        report["shard"] = shard
    return report


def exit_code(report: Mapping[str, Any]) -> int:
    """0 running and healthy, 3 no running service (absent, stale, stopped), 4 running with alerts."""
    if report["service"]["state"] != "running":
        return EXIT_NOT_RUNNING
    return EXIT_DEGRADED if report["alerts"] else EXIT_OK


def worst_exit_code(reports: list[Mapping[str, Any]]) -> int:
    """One exit code for several shards: not running (3) if any is not, else degraded (4) if any has alerts."""
    codes = {exit_code(r) for r in reports}
    return EXIT_NOT_RUNNING if EXIT_NOT_RUNNING in codes else max(codes)


# -- status.json ---------------------------------------------------------------------------------


def _service(path: Path, now: int) -> tuple[dict[str, Any], dict[str, Any]]:
    if not path.exists():
        return {}, {"state": "absent", "message": f"no {path.name}: no service has run on this data directory"}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return {}, {"state": "unreadable", "message": f"cannot read {path}: {exc}"}
    interval = as_number(raw.get("status_interval_s")) or DEFAULT_STATUS_INTERVAL_S
    written = epoch_ms(raw.get("written_at"))
    age = None if written is None else max(0.0, (now - written) / 1000)
    service: dict[str, Any] = {
        "state": "running", "message": "", "written_at": raw.get("written_at"), "age_s": age,
        "status_interval_s": interval, "mode": raw.get("mode"), "uptime_s": raw.get("uptime_s"),
        "symbols": as_list(raw.get("symbols")), "exchange_time": raw.get("exchange_time"),
    }
    limit = max(STALE_INTERVALS * interval, MIN_STALE_S)
    if raw.get("running") is False:
        service.update(state="stopped", message=f"the service stopped (status written {_ago(age)})")
    elif _dead(raw):
        service.update(state="stopped", message=f"the service (pid {raw['pid']}) is not running: it was killed or "
                                                f"crashed; its last snapshot was written at {raw.get('written_at')} "
                                                f"({_ago(age)})")
    elif age is None or age > limit:
        service.update(state="stale", message=f"{path.name} was written {_ago(age)} (every {interval:g} s expected): "
                                              "service not running?")
    return raw, service


def _dead(raw: Mapping[str, Any]) -> bool:
    """Whether status.json names a process of this host that no longer exists (``kill -9``, a crash)."""
    pid = raw.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or raw.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, under another user
        return False
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed child its parent has not reaped yet still answers ``kill(pid, 0)``; Linux says it is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _streams(raw: Mapping[str, Any]) -> dict[str, Any]:
    connections = [c for c in as_list(raw.get("connections")) if isinstance(c, dict)]
    missing = {str(k): [str(s) for s in as_list(v)] for k, v in as_dict(raw.get("missing_streams")).items()}
    return {
        "total": sum(int(as_number(c.get("streams")) or 0) for c in connections),
        "subscribed": sum(int(as_number(c.get("subscribed")) or 0) for c in connections),
        "missing": missing,
        "missing_count": sum(len(v) for v in missing.values()),
    }


def _dataqual(raw: Mapping[str, Any], data_dir: Path) -> list[dict[str, Any]]:
    """Latest score per symbol: from status.json when the service puts it there, else the tables."""
    rows = [{**row, "source": "status.json"} for row in dataqual_scores(dict(raw))]
    if rows:
        return sorted(rows, key=lambda r: str(r["symbol"]))
    return latest_dataqual(data_dir)


def latest_dataqual(data_dir: Path, symbol: str | None = None) -> list[dict[str, Any]]:
    """The newest published DataQual row per symbol (score, reasons, time)."""
    where = f"WHERE symbol = '{check_symbol(symbol)}'" if symbol else ""
    con = connect(data_dir)
    try:
        frame = pl.from_arrow(execute(con, (
            "SELECT symbol, arg_max(score, ts) AS score, arg_max(reasons, ts) AS reasons, "
            "arg_max(missing_streams, ts) AS missing_streams, arg_max(gaps, ts) AS gaps, max(ts) AS ts "
            f"FROM dataqual {where} GROUP BY symbol ORDER BY symbol"
        )).read_all())
    finally:
        con.close()
    return [
        {**row, "ts": iso(int(row["ts"].timestamp() * 1000)) if row["ts"] else None, "source": "tables"}
        for row in frame.iter_rows(named=True)  # type: ignore[union-attr]
    ]


def _storage(raw: Mapping[str, Any], data_dir: Path, now: int) -> dict[str, Any]:
    storage = as_dict(raw.get("storage"))
    flushed = last_flush_ms(dict(raw))
    wal_given = raw.get("wal") if isinstance(raw.get("wal"), dict) else {}
    return {
        **{k: v for k, v in storage.items() if k not in ("last_flush", "restart")},
        "last_flush": iso(flushed) if flushed is not None else None,
        "last_flush_age_s": None if flushed is None else max(0.0, (now - flushed) / 1000),
        "wal": {**wal_on_disk(data_dir), **wal_given},
        "quarantined": quarantine_records(data_dir),
    }


def wal_on_disk(data_dir: Path) -> dict[str, int]:
    """WAL segments and bytes waiting to be flushed, per the files themselves."""
    segments = [p for p in (data_dir / "wal").glob("*/*.wal") if p.is_file()]
    return {"segments": len(segments), "bytes": sum(p.stat().st_size for p in segments)}


# -- the dataset ---------------------------------------------------------------------------------


def dataset_summary(data_dir: Path, now: int, market: str = "um") -> list[dict[str, Any]]:
    """Per stored interval: partitions (months, or years for 1h and longer), files (total and most
    in one partition), bytes, newest bar.

    ``now`` is exchange time when the service reported it (a simulator's clock runs fast),
    so ``newest_age_s`` is how far the newest bar lags the market.
    """
    by_interval: dict[str, list[Partition]] = {}
    for partition in Dataset(data_dir, market).partitions():
        by_interval.setdefault(partition.interval, []).append(partition)
    out = []
    for interval, partitions in by_interval.items():
        files = [part.files() for part in partitions]
        newest = _newest(files)
        out.append({
            "interval": interval, "partitions": len(partitions),
            "partitioned_by": "year" if all(len(p.month) == 4 for p in partitions) else "month",
            "months": len(partitions),  # the old name of "partitions", kept for readers of status JSON
            "files": sum(len(f) for f in files),
            "max_files_per_partition": max((len(f) for f in files), default=0),
            "bytes": sum(p.stat().st_size for f in files for p in f if p.exists()),
            "symbols": len(newest), "newest_open_time": iso(max(newest.values())) if newest else None,
            "newest_age_s": max(0.0, (now - max(newest.values())) / 1000) if newest else None,
        })
    return sorted(out, key=lambda r: interval_sort_key(r["interval"]))


def _newest(files: list[list[Path]]) -> dict[str, int]:
    """Newest open time per symbol in the newest partition that has files."""
    for group in reversed(files):
        if group:
            try:
                frame = pl.scan_parquet([str(p) for p in group], hive_partitioning=False).group_by("symbol").agg(
                    pl.col("open_time").max().dt.epoch("ms")
                ).collect()
            except (pl.exceptions.PolarsError, OSError):  # a file compacted away meanwhile: skip, status goes on
                continue
            return dict(frame.iter_rows())  # type: ignore[arg-type]
    return {}


# -- alerts ----------------------------------------------------------------------------------------


def alerts(report: Mapping[str, Any], raw: Mapping[str, Any], *, dataqual_min: float) -> list[dict[str, str]]:
    """The service's own alerts plus what the report shows is wrong, most severe first."""
    out = [_alert(a) for a in as_list(raw.get("alerts"))]
    service = report["service"]
    if service["state"] in ("absent", "stale", "unreadable"):
        out.append({"level": "error", "message": service["message"]})
    live = service["state"] == "running"
    for conn in report["connections"] if live else ():
        state = str(conn.get("state", "?"))
        if state in _BAD_STATES or state in _SHAKY_STATES:
            level = "error" if state in _BAD_STATES else "warning"
            out.append({"level": level, "message": f"connection {conn.get('id', '?')} is {state} "
                                                   f"(retries {conn.get('retries', '?')})"})
    streams = report["streams"]
    if streams and streams["missing_count"]:
        names = [s for v in streams["missing"].values() for s in v]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        out.append({"level": "warning", "message": f"{len(names)} stream(s) silent: {shown}"})
    for row in report["dataqual"]:
        score = as_number(row.get("score"))
        if score is not None and score < dataqual_min:
            reasons = f": {row['reasons']}" if row.get("reasons") else ""
            out.append({"level": "warning", "message": f"DataQual {row['symbol']} {score:.2f} < {dataqual_min:g}{reasons}"})
    rest = report["rest"]
    if as_number(rest.get("banned")):
        out.append({"level": "error", "message": "REST banned by the exchange (418)"})
    storage = report["storage"]
    if storage.get("last_flush_error"):
        out.append({"level": "error", "message": f"last flush failed: {storage['last_flush_error']}"})
    quarantined = [str(r.get("file")) for r in storage.get("quarantined", ())]
    if quarantined:
        shown = ", ".join(quarantined[:3]) + (f" and {len(quarantined) - 3} more" if len(quarantined) > 3 else "")
        out.append({"level": "warning", "message": f"{len(quarantined)} damaged file(s) in quarantine/: {shown}"})
    counters = report["counters"]
    if as_number(counters.get("sink_errors")):
        out.append({"level": "warning", "message": f"{counters['sink_errors']} storage write errors"})
    return sorted(out, key=lambda a: a["level"] != "error")


def _alert(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        message = value.get("message") or value.get("text") or json.dumps(value, default=str)
        return {**{k: str(v) for k, v in value.items()}, "level": str(value.get("level", "warning")),
                "message": str(message)}
    return {"level": "warning", "message": str(value)}


def _ago(age: float | None) -> str:
    if age is None:
        return "at an unknown time"
    if age < 120:
        return f"{age:.0f} s ago"
    if age < 7200:
        return f"{age / 60:.0f} min ago"
    return f"{age / 3600:.1f} h ago"
