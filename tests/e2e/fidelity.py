"""End-to-end fidelity helpers: the simulator and the service as real subprocesses, and
every stored bar checked against the exchange's ground truth.

The API, small on purpose (other end-to-end tests reuse it):

* :class:`SimProcess` ``.start(...)``: ``klinestore sim`` in a subprocess; ``now_ms()``,
  ``truth(symbol, interval)``, ``ledger()``, ``inject(fault)``, ``stop()``.
* :func:`service_config`: a ``klinestore run`` config (nested JSON) against a simulator with
  every timer scaled for a fast clock; :class:`ServiceProcess` ``.start(config, ...)`` runs it,
  ``status()`` reads status.json, ``stop()`` sends SIGTERM and waits for exit 0.
* :func:`compare`: every stored bar of some series (``storage.read_bars``, cross-checked with
  the DuckDB ``bars`` relation) against ``/sim/truth`` over a window: a :class:`Fidelity`
  with the missing, extra, different and incomplete bars, and a printable table.
* :func:`gaps_table`: the ``gaps`` table as published under ``<data-dir>/tables/gaps/``
  (times in epoch ms), and :func:`gap_bars`: the open times its rows list.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import duckdb
import polars as pl

from klinestore.core.intervals import interval_ms
from klinestore.storage import bars_relation_sql, read_bars
from klinestore.storage.tables import published_glob
from support import klinestore_command, subprocess_env

#: The columns of a Binance kline row, in /sim/truth's order, named as stored (the 12th, "ignore", is not).
KLINE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "trades",
                 "taker_buy_volume", "taker_buy_quote_volume")
#: Timers of a service that watches a clock running hundreds of times faster than the wall's.
FAST_TIMERS: dict[str, Any] = {
    "websocket.heartbeat.check_interval": 0.25,
    "websocket.heartbeat.timeout": 1.5,
    "websocket.heartbeat.resubscribe_after": 0.5,
    "websocket.ping.interval": 0.5,
    "websocket.ping.timeout": 1.0,
    "websocket.reconnect.base_delay": 0.05,
    "websocket.reconnect.max_delay": 0.5,
    "websocket.reconnect.failed_retry_interval": 0.5,
    "websocket.reconnect.open_timeout": 3.0,
    "websocket.control_timeout": 3.0,
    "websocket.reconciliation.kline_interval": 0.5,
    "websocket.reconciliation.aggtrade_interval": 0.5,
    "websocket.reconciliation.depth_interval": 1.0,
    "rest.retry_base_delay": 0.02,
    "rest.retry_max_delay": 0.2,
    "storage.flush_interval": 0.5,
    "storage.compaction_interval": 2.0,
    "storage.compaction_grace": 1.0,
    "jobs.status_interval": 0.5,
    "jobs.dataqual_interval": 0.5,
    "jobs.publish_interval": 0.5,
    "jobs.gap_check_interval": 0.5,
    "jobs.listing_refresh_interval": 5.0,
}


def _http(method: str, url: str, body: Any = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {url}: HTTP {exc.code} {exc.read()[:300]!r}") from None


def _wait_exit(proc: subprocess.Popen[Any], timeout: float, what: str) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{what} did not stop within {timeout}s after SIGTERM (killed)") from None


@dataclass
class SimProcess:
    """``klinestore sim`` in a subprocess (its own core: the service gets the other)."""

    proc: subprocess.Popen[str]
    ws: str
    rest: str
    log: IO[str]

    @classmethod
    def start(cls, log_path: Path, *, symbols: Sequence[str], speed: float, start: int, seed: int = 7,
              history_minutes: int = 1440, max_connection_age: float = 86_400.0, extra: Sequence[str] = ()) -> SimProcess:
        """Start the generated market; ``start`` is the exchange start in epoch ms."""
        return cls.launch(log_path, "--symbols", ",".join(symbols), "--speed", str(speed), "--seed", str(seed),
                          "--start", str(start), "--history-minutes", str(history_minutes),
                          "--max-connection-age", str(max_connection_age), *extra)

    @classmethod
    def launch(cls, log_path: Path, *args: str) -> SimProcess:
        """``klinestore sim --port 0 ARGS...`` (stderr to ``log_path``), once it has named its URLs."""
        log = open(log_path, "w")  # noqa: SIM115 - closed by stop()
        proc = subprocess.Popen(klinestore_command("sim", "--port", "0", *args), stdout=subprocess.PIPE, stderr=log,
                                text=True, env=subprocess_env(), cwd=log_path.parent)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(5)
            log.close()
            raise AssertionError(f"klinestore sim exited {proc.returncode}: {log_path.read_text()[-2000:]}")
        urls = json.loads(line)
        return cls(proc, urls["ws"], urls["rest"], log)

    def get(self, path: str) -> Any:
        return _http("GET", self.rest + path)

    def now_ms(self) -> int:
        return int(self.get("/sim/time")["now"])

    def truth(self, symbol: str, interval: str) -> dict[int, list[Any]]:
        """Every bar closed so far, by open time, as a 12-field REST row."""
        return {int(row[0]): row for row in self.get(f"/sim/truth?symbol={symbol}&interval={interval}")}

    def ledger(self) -> dict[str, int]:
        return self.get("/sim/ledger")

    def inject(self, fault: Mapping[str, Any]) -> Any:
        return _http("POST", self.rest + "/sim/faults", dict(fault))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            _wait_exit(self.proc, 15, "klinestore sim")
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def nested(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` → ``{"a": {"b": 1}}``: config files are nested JSON."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def service_config(sim: SimProcess, data_dir: Path, *, symbols: Sequence[str], fallback: bool,
                   **changes: Any) -> dict[str, Any]:
    """A ``klinestore run`` config against ``sim`` (dotted ``changes`` override, e.g. ``**{"a.b": 1}``)."""
    dotted = {
        **FAST_TIMERS,
        "symbols": list(symbols),
        "websocket.base_url": sim.ws,
        "websocket.rest_url": sim.rest,
        "storage.data_dir": str(data_dir),
        "modes.websocket_only_klines": not fallback,
        "modes.disable_rest_fallback": not fallback,
        **changes,
    }
    return nested(dotted)


@dataclass
class ServiceProcess:
    """``klinestore run --config`` in a subprocess."""

    proc: subprocess.Popen[str]
    data_dir: Path
    log: IO[str]
    log_path: Path

    @classmethod
    def start(cls, config: Mapping[str, Any], work: Path) -> ServiceProcess:
        data_dir = Path(config["storage"]["data_dir"])
        config_path = work / "service.json"
        config_path.write_text(json.dumps(config, indent=1))
        log_path = work / "service.log"
        log = open(log_path, "w")  # noqa: SIM115 - closed by stop()
        proc = subprocess.Popen(klinestore_command("-v", "run", "--config", str(config_path)), stdout=log,
                                stderr=subprocess.STDOUT, text=True, env=subprocess_env(), cwd=work)
        return cls(proc, data_dir, log, log_path)

    def status(self) -> dict[str, Any] | None:
        """status.json as last written (None before the first write)."""
        try:
            return json.loads((self.data_dir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def wait_until(self, check: Any, timeout: float, what: str) -> dict[str, Any]:
        """Poll status.json until ``check(status)`` is true; return that status."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"klinestore run exited {self.proc.returncode}: {self.tail()}")
            status = self.status()
            if status is not None and check(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; status: {status and status.get('connections')}")
            time.sleep(0.05)

    def tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return self.log_path.read_text()[-chars:]

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the clean shutdown (last flush, tables published)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = _wait_exit(self.proc, timeout, "klinestore run")
        self.log.close()
        return code


def all_subscribed(status: Mapping[str, Any]) -> bool:
    """Every connection of a status.json SUBSCRIBED."""
    conns = status.get("connections") or []
    return bool(conns) and all(c["state"] == "SUBSCRIBED" for c in conns)


# -- comparison ------------------------------------------------------------------------------


@dataclass
class SeriesFidelity:
    """One series: stored bars against the truth inside ``[start, end]`` (open times, inclusive)."""

    symbol: str
    interval: str
    start: int
    end: int
    compared: int = 0  # stored bars that the exchange has (checked column by column)
    missing: list[int] = field(default_factory=list)  # truth bars in the window not stored as complete
    extra: list[int] = field(default_factory=list)  # stored bars the exchange never closed
    different: list[tuple[int, str, Any, Any]] = field(default_factory=list)  # (open, column, stored, truth)
    incomplete: list[int] = field(default_factory=list)  # stored, marked is_complete=false (never "different")
    present: set[int] = field(default_factory=set)  # stored complete bars the exchange has (any open time)
    sources: dict[str, int] = field(default_factory=dict)  # compared bars by source (ws, rest, resample)


@dataclass
class Fidelity:
    series: list[SeriesFidelity]

    def total(self, name: str) -> int:
        return sum(len(getattr(s, name)) if name != "compared" else s.compared for s in self.series)

    def by_interval(self, name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.series:
            out[s.interval] = out.get(s.interval, 0) + (s.compared if name == "compared" else len(getattr(s, name)))
        return out

    def table(self) -> str:
        lines = [f"{'series':<16} {'window (open times, UTC)':<37} {'compared':>8} {'missing':>7} {'extra':>5} "
                 f"{'diff':>5} {'incompl':>7}  compared by source"]
        for s in self.series:
            window = f"{_iso(s.start)} .. {_iso(s.end)}"
            lines.append(f"{s.symbol + ' ' + s.interval:<16} {window:<37} {s.compared:>8} {len(s.missing):>7} "
                         f"{len(s.extra):>5} {len(s.different):>5} {len(s.incomplete):>7}  "
                         + " ".join(f"{k} {v}" for k, v in sorted(s.sources.items())))
        lines.append(f"{'total':<16} {'':<37} {self.total('compared'):>8} {self.total('missing'):>7} "
                     f"{self.total('extra'):>5} {self.total('different'):>5} {self.total('incomplete'):>7}")
        return "\n".join(lines)

    def details(self, limit: int = 8) -> str:
        """The first few findings of each kind per series (for assertion messages)."""
        out = []
        for s in self.series:
            for name in ("missing", "extra", "different", "incomplete"):
                items = getattr(s, name)
                if items:
                    shown = [(_iso(i[0]), *i[1:]) if isinstance(i, tuple) else _iso(i) for i in items[:limit]]
                    out.append(f"{s.symbol} {s.interval} {name} ({len(items)}): {shown}")
        return "\n".join(out)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ms / 1000))


def stored_bars(data_dir: Path, symbol: str, interval: str) -> pl.DataFrame:
    """Stored bars as ``read_bars`` gives them (times epoch ms), checked equal to the DuckDB relation."""
    frame = read_bars(data_dir, symbol, interval)
    frame = frame.with_columns(pl.col("open_time", "close_time").dt.epoch("ms"))
    sql = (f"SELECT * EXCLUDE (open_time, close_time), epoch_ms(open_time) AS open_time, "
           f"epoch_ms(close_time) AS close_time FROM ({bars_relation_sql(data_dir, interval)}) "
           f"WHERE symbol = '{symbol}' ORDER BY open_time")
    view = duckdb.connect().sql(sql).pl().select(frame.columns)
    if not view.equals(frame.select(view.columns)):
        raise AssertionError(f"read_bars and the bars view disagree on {symbol} {interval}")
    return frame


def compare_series(stored: pl.DataFrame, truth: Mapping[int, Sequence[Any]], result: SeriesFidelity) -> SeriesFidelity:
    """Fill ``result``: every stored bar against the truth, every truth bar in the window looked up."""
    present = result.present
    for row in stored.iter_rows(named=True):
        t = row["open_time"]
        ref = truth.get(t)
        if not row["is_complete"]:
            result.incomplete.append(t)
            if ref is None and not (result.start <= t <= result.end):
                continue  # a bucket still open at the end, marked so: what a user may see of a live bar
            if ref is None:
                result.extra.append(t)
            continue
        if ref is None:
            result.extra.append(t)
            continue
        present.add(t)
        result.compared += 1
        result.sources[row["source"]] = result.sources.get(row["source"], 0) + 1
        for i, column in enumerate(KLINE_COLUMNS):
            want = int(ref[i]) if column in ("open_time", "close_time", "trades") else float(ref[i])
            if row[column] != want:
                result.different.append((t, column, row[column], want))
    step = interval_ms(result.interval)
    result.missing = [t for t in sorted(truth) if result.start <= t <= result.end and t not in present]
    assert all((t - result.start) % step == 0 for t in result.missing)
    return result


def compare(data_dir: Path, truth: Mapping[tuple[str, str], Mapping[int, Sequence[Any]]],
            windows: Mapping[tuple[str, str], tuple[int, int]]) -> Fidelity:
    """Every stored bar of each (symbol, interval) in ``windows`` against ``truth``.

    A stored complete bar must equal its truth row on all 12 columns (else *different*; absent
    from the truth: *extra*). A stored bar marked ``is_complete=false`` is *incomplete*: a
    partial bucket that says so, never compared as a finished bar and never counted present;
    it is *extra* if the exchange has no such bar and the window covers it. A truth bar inside
    the window ``(first, last)`` open times without a stored complete bar is *missing*.
    """
    series = []
    for (symbol, interval), (start, end) in windows.items():
        result = SeriesFidelity(symbol, interval, start, end)
        series.append(compare_series(stored_bars(data_dir, symbol, interval), truth[(symbol, interval)], result))
    return Fidelity(series)


def gaps_table(data_dir: Path) -> pl.DataFrame:
    """The published ``gaps`` table (every shard's file), times as epoch ms, filled_at null while open."""
    times = ("start_time", "end_time", "detected_at", "filled_at")
    cols = ", ".join(f"epoch_ms({c}) AS {c}" if c in times else c
                     for c in ("symbol", "interval", "start_time", "end_time", "detected_at", "filled_at", "reason"))
    return duckdb.connect().sql(f"SELECT {cols} FROM read_parquet('{published_glob(data_dir, 'gaps')}')").pl()


def gap_bars(gaps: pl.DataFrame, symbol: str, interval: str, *, open_only: bool = True) -> set[int]:
    """Open times the ``gaps`` rows of a series list (``end_time`` inclusive)."""
    rows = gaps.filter((pl.col("symbol") == symbol) & (pl.col("interval") == interval))
    if open_only:
        rows = rows.filter(pl.col("filled_at").is_null())
    step = interval_ms(interval)
    return {t for s, e in rows.select("start_time", "end_time").iter_rows() for t in range(s, e + step, step)}


def windows_for(symbols: Iterable[str], intervals: Iterable[str], first_ms: int,
                last_close_ms: int) -> dict[tuple[str, str], tuple[int, int]]:
    """Per series ``(first open, last open)``: from the first bar opening at or after ``first_ms``
    to the last bar closed by ``last_close_ms`` (its close time, open + length - 1, is below it)."""
    out = {}
    for interval in intervals:
        step = interval_ms(interval)
        first = -(-first_ms // step) * step
        last = last_close_ms // step * step - step
        for symbol in symbols:
            out[(symbol, interval)] = (first, last)
    return out

