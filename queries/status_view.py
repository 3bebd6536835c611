"""The status report laid out for people (rich): the service line, alerts, then one table per topic.

Large deployments stay readable: readiness is a per-interval summary beyond
``GRID_SYMBOLS`` symbols, DataQual lists the worst ``DATAQUAL_ROWS`` scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

GRID_SYMBOLS = 12
DATAQUAL_ROWS = 20
_STATE_STYLE = {"running": "green", "stopped": "yellow", "stale": "red", "absent": "red", "unreadable": "red"}
_CONN_STYLE = {"SUBSCRIBED": "green", "CONNECTED": "green", "FAILED": "red"}


def render(report: Mapping[str, Any]) -> RenderableType:
    parts: list[RenderableType] = [_header(report)]
    if report["alerts"]:
        parts.append(_alerts(report["alerts"]))
    if report["connections"]:
        parts.append(_connections(report))
    if report["timeframes"] or report["warming_up"]:
        parts.append(_readiness(report))
    if report["dataqual"]:
        parts.append(_dataqual(report["dataqual"]))
    parts.append(_storage(report))
    if report["jobs"]:
        parts.append(_jobs(report["jobs"]))
    if report["ledger"]:
        parts.append(_ledger(report))
    return Group(*parts)


def _header(report: Mapping[str, Any]) -> RenderableType:
    service = report["service"]
    state = service["state"]
    text = Text()
    text.append("service ", style="bold")
    text.append(state.upper(), style=f"bold {_STATE_STYLE.get(state, 'white')}")
    if service.get("mode"):
        text.append(f"  mode {service['mode']}")
    if service.get("uptime_s") is not None:
        text.append(f"  up {_duration(service['uptime_s'])}")
    if service.get("age_s") is not None:
        text.append(f"  status written {_duration(service['age_s'])} ago")
    if service.get("symbols"):
        text.append(f"  {len(service['symbols'])} symbols")
    if service.get("message"):
        text.append(f"\n{service['message']}", style=_STATE_STYLE.get(state, "white"))
    counters = report["counters"]
    if counters:
        rejected = counters.get("rejected") or {}
        text.append(
            f"\nmessages {counters.get('messages', 0):,}  reconnects {counters.get('reconnects', 0)}  "
            f"closed bars {counters.get('closed_bars', 0):,}  rejected {sum(rejected.values()) if rejected else 0}"
        )
        if rejected:
            text.append(" (" + ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) + ")")
    return Panel(text, title=f"klinestore status: {report['data_dir']}", title_align="left", expand=False)


def _alerts(alerts: list[Mapping[str, str]]) -> RenderableType:
    text = Text()
    for n, alert in enumerate(alerts):
        style = "bold red" if alert["level"] == "error" else "yellow"
        text.append(("\n" if n else "") + f"{alert['level']:>7}  ", style=style)
        text.append(alert["message"])
    return Panel(text, title="alerts", title_align="left", border_style="red", expand=False)


def _connections(report: Mapping[str, Any]) -> RenderableType:
    table = Table(title="connections", title_justify="left")
    for col in ("id", "state", "streams", "retries", "reconnects", "last message", "messages"):
        table.add_column(col, justify="left" if col in ("id", "state") else "right")
    for c in report["connections"]:
        state = str(c.get("state", "?"))
        age = c.get("last_message_age_s")
        table.add_row(
            str(c.get("id", "?")), Text(state, style=_CONN_STYLE.get(state, "yellow")), str(c.get("streams", "")),
            str(c.get("retries", "")), str(c.get("reconnects", "")), "-" if age is None else f"{age:.1f} s ago",
            f"{c.get('messages', 0):,}" if isinstance(c.get("messages"), int) else "",
        )
    return _noted(table, _streams_caption(report["streams"]))


def _streams_caption(streams: Mapping[str, Any] | None) -> str:
    if not streams:
        return ""
    text = f"{streams['total']} streams, {streams['subscribed']} subscribed, {streams['missing_count']} missing"
    if streams["missing_count"]:
        text += ": " + ", ".join(s for v in streams["missing"].values() for s in v)
    return text


def _readiness(report: Mapping[str, Any]) -> RenderableType:
    timeframes: Mapping[str, Mapping[str, Mapping[str, Any]]] = report["timeframes"]
    intervals = list(dict.fromkeys(iv for per in timeframes.values() for iv in per))
    table = Table(title="timeframes (ready / warming_up)", title_justify="left")
    if len(timeframes) <= GRID_SYMBOLS:
        table.add_column("symbol")
        for iv in intervals:
            table.add_column(iv, justify="center")
        for symbol, per in timeframes.items():
            table.add_row(symbol, *(_ready_cell(per.get(iv)) for iv in intervals))
        return table
    table.add_column("interval")
    table.add_column("ready", justify="right")
    table.add_column("warming up", justify="left")
    for iv in intervals:
        warming = [s for s, per in timeframes.items() if iv in per and not per[iv].get("ready")]
        shown = ", ".join(warming[:8]) + (f" +{len(warming) - 8}" if len(warming) > 8 else "")
        table.add_row(iv, f"{len(timeframes) - len(warming)}/{len(timeframes)}", shown)
    return table


def _ready_cell(cell: Mapping[str, Any] | None) -> Text:
    if cell is None:
        return Text("-", style="dim")
    if cell.get("ready"):
        return Text(f"ready {cell.get('bars', '')}", style="green")
    return Text(f"warming {cell.get('bars', 0)}", style="yellow")


def _dataqual(rows: list[Mapping[str, Any]]) -> RenderableType:
    worst = sorted(rows, key=lambda r: (r.get("score") is None, r.get("score") or 0.0))[:DATAQUAL_ROWS]
    title = "DataQual" + (f" (worst {DATAQUAL_ROWS} of {len(rows)})" if len(rows) > DATAQUAL_ROWS else "")
    table = Table(title=title, title_justify="left")
    for col in ("symbol", "score", "reasons", "at"):
        table.add_column(col, justify="right" if col == "score" else "left")
    for r in worst:
        score = r.get("score")
        style = "green" if isinstance(score, (int, float)) and score >= 0.9 else "yellow"
        table.add_row(str(r["symbol"]), Text(f"{score:.3f}" if isinstance(score, (int, float)) else "-", style=style),
                      str(r.get("reasons") or ""), str(r.get("ts") or ""))
    return table


def _storage(report: Mapping[str, Any]) -> RenderableType:
    storage = report["storage"]
    wal = storage.get("wal", {})
    flush = storage.get("last_flush")
    line = (f"last flush {flush} ({_duration(storage['last_flush_age_s'])} ago)" if flush else "last flush: never")
    line += f"   WAL {wal.get('segments', 0)} segment(s), {_bytes(wal.get('bytes', 0))}"
    if "pending_bars" in storage:
        line += f", {storage['pending_bars']} bars pending"
    market = report.get("market", "um")
    table = Table(title="storage" if market == "um" else f"storage ({market} dataset)", title_justify="left")
    for col in ("interval", "partitions", "files", "max/partition", "size", "symbols", "newest bar", "age"):
        table.add_column(col, justify="left" if col in ("interval", "newest bar") else "right")
    for r in report["dataset"]:
        age = r.get("newest_age_s")
        span = r.get("partitioned_by", "month")
        table.add_row(r["interval"], f"{r.get('partitions', r['months'])} {span}s", str(r["files"]), str(r["max_files_per_partition"]),
                      _bytes(r["bytes"]), str(r["symbols"]), _short_time(r.get("newest_open_time")),
                      "-" if age is None else _duration(age))
    if not report["dataset"]:
        table.add_row("(no bars stored yet)", "", "", "", "", "", "", "")
    return _noted(table, line)


def _jobs(jobs: Mapping[str, Any]) -> RenderableType:
    """Scheduled jobs (the scheduler's stats: every_s, runs, failures, skipped, last_error...)."""
    fields = list(dict.fromkeys(k for stats in jobs.values() if isinstance(stats, dict) for k in stats))
    table = Table(title="jobs", title_justify="left")
    table.add_column("job")
    for name in fields:
        table.add_column(name.replace("_", " "), justify="left" if name == "last_error" else "right")
    for job, stats in sorted(jobs.items()):
        stats = stats if isinstance(stats, dict) else {}
        failing = bool(stats.get("failures")) or bool(stats.get("last_error"))
        table.add_row(Text(job, style="yellow" if failing else ""), *(_value(stats.get(f)) for f in fields))
    return table


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _ledger(report: Mapping[str, Any]) -> RenderableType:
    rest = report["rest"]
    caption = ""
    if rest:
        caption = (f"weight this minute {rest.get('weight_used', '?')}/{rest.get('weight_usable', '?')}, "
                   f"429s {rest.get('rate_limited', 0)}, 418s {rest.get('banned', 0)}, retries {rest.get('retries', 0)}")
    table = Table(title="REST API ledger", title_justify="left")
    for col in ("endpoint", "calls", "weight", "errors"):
        table.add_column(col, justify="left" if col in ("endpoint", "errors") else "right")
    for endpoint, entry in sorted(report["ledger"].items()):
        entry = entry if isinstance(entry, dict) else {}
        errors = entry.get("errors") or {}
        table.add_row(endpoint, str(entry.get("calls", "")), str(entry.get("weight", "")),
                      ", ".join(f"{k}: {v}" for k, v in errors.items()) if isinstance(errors, dict) else str(errors))
    return _noted(table, caption)


def _noted(table: Table, note: str) -> RenderableType:
    """A table with a line under it (a caption would wrap at the table's width)."""
    return Group(table, Text(note, style="dim")) if note else table


def _short_time(value: str | None) -> str:
    return "-" if not value else value.replace("T", " ")[:16]


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"
