"""Black-box crash harness: the simulator, `klinestore run` and `klinestore import` as processes.

What counts as *received* is read from disk, not guessed from what the simulator sent: a kill
is always ``SIGSTOP`` first, then a snapshot (every whole WAL record of the service, plus every
1m bar the deduplicated Parquet view shows, which is what a concurrent reader would see at
that instant), then ``SIGKILL``. A stopped process writes nothing, so the snapshot is exactly
what was durable at the kill: the bars ``BarStore.append`` had handed to ``write(2)`` (the WAL
records) and the bars already published. Every one of them must be in storage afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import duckdb
import pyarrow.parquet as pq

from klinestore.storage.layout import dataset_root, state_dir, wal_dir
from klinestore.storage.reader import bars_relation_sql
from klinestore.storage.wal import read_records
from support import klinestore_command, subprocess_env
from tests.e2e.fidelity import SimProcess

SERVICE_WRITER = "s0000"
#: The 11 kline values of a bar as compared with the exchange's record (close_time first).
VALUE_COLUMNS = ("close_time", "open", "high", "low", "close", "volume", "quote_volume", "trades",
                 "taker_buy_volume", "taker_buy_quote_volume")
Key = tuple[str, str, int]  # symbol, interval, open time (ms)
Values = tuple[Any, ...]


def wait_for(check: Callable[[], Any], timeout: float, what: str, poll: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


# --- processes --------------------------------------------------------------------------------


def truth_values(sim: SimProcess, symbol: str, interval: str) -> dict[int, Values]:
    """Every bar the simulator has closed so far, keyed by open time, as comparable values."""
    return {t: rest_values(row) for t, row in sim.truth(symbol, interval).items()}


def rest_values(row: list[Any]) -> Values:
    """A 12-field REST/archive row as ``VALUE_COLUMNS`` (decimal strings parsed as the service does)."""
    return (int(row[6]), float(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5]),
            float(row[7]), int(row[8]), float(row[9]), float(row[10]))


def start_service(workdir: Path, config: Path, data: Path, sim: SimProcess, log: IO[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        klinestore_command("run", "--config", str(config), "--data-dir", str(data), "--ws-url", sim.ws,
                           "--rest-url", sim.rest),
        stdout=log, stderr=log, text=True, env=subprocess_env(), cwd=workdir)


def start_import(workdir: Path, data: Path, archives: Iterable[Path], log: IO[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(klinestore_command("import", *map(str, archives), "--data-dir", str(data)),
                            stdout=log, stderr=log, text=True, env=subprocess_env(), cwd=workdir)


def stop(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    """SIGTERM (a clean stop) and the exit status; SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=timeout)


# --- what is on disk ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InFlight:
    """Publishes under way at an instant, per writer: tmp files written, journals not yet done."""

    tmp: dict[str, list[str]] = field(default_factory=dict)  # writer -> tmp file names
    journals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # writer -> live journals

    def flushing(self) -> bool:
        """The service's flush between its first tmp file and its journal's removal."""
        return any("-g0." in name for name in self.tmp.get(SERVICE_WRITER, ())) or any(
            any(p.startswith("wal/") for p in j.get("delete", ())) for j in self.journals.get(SERVICE_WRITER, ()))

    def compacting(self) -> bool:
        """The service's compaction writing its merged file or publishing it (not a grace period)."""
        return any("-g0." not in name for name in self.tmp.get(SERVICE_WRITER, ())) or any(
            j.get("obsolete") and j.get("create") for j in self.journals.get(SERVICE_WRITER, ()))

    def importing(self) -> bool:
        return bool(self.tmp.get("imp") or any(j.get("create") for j in self.journals.get("imp", ())))


def in_flight(data: Path) -> InFlight:
    """Scan the partition folders and the journals (a few folders: cheap enough to poll)."""
    tmp: dict[str, list[str]] = {}
    for interval_dir in _listdir(dataset_root(data)):
        for month_dir in _listdir(interval_dir):
            for entry in _listdir(month_dir):
                if entry.name.endswith(".tmp"):
                    writer = entry.name.split("-")[1]
                    tmp.setdefault(writer, []).append(entry.name)
    journals: dict[str, list[dict[str, Any]]] = {}
    for entry in _listdir(state_dir(data)):
        if entry.name.startswith("txn-") and entry.name.endswith(".json"):
            try:
                journal = json.loads(Path(entry.path).read_text())
            except (OSError, ValueError):
                continue  # replaced or removed this instant
            journals.setdefault(entry.name.split("-")[1], []).append(journal)
    return InFlight(tmp, journals)


def _listdir(path: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def wal_bars(data: Path, writer: str = SERVICE_WRITER) -> dict[Key, Values]:
    """Every bar in the whole records of ``writer``'s WAL (a later record of a key wins)."""
    out: dict[Key, Values] = {}
    for _, bars in read_records(wal_dir(data, writer)):
        for bar in bars:
            out[bar.key] = tuple(getattr(bar, c) for c in VALUE_COLUMNS)
    return out


def stored_bars(data: Path, interval: str = "1m") -> dict[Key, Values]:
    """The deduplicated view's bars of one interval (what any reader sees now)."""
    if not any(dataset_root(data).glob(f"interval={interval}/month=*/*.parquet")):
        return {}
    cols = ", ".join(f"epoch_ms({c})" if c == "close_time" else c for c in VALUE_COLUMNS)
    with duckdb.connect() as con:
        rows = con.sql(f"SELECT symbol, epoch_ms(open_time), {cols} FROM ({bars_relation_sql(data, interval)})").fetchall()
    return {(r[0], interval, r[1]): tuple(r[2:]) for r in rows}


@dataclass(frozen=True)
class Snapshot:
    """What was durable at one kill."""

    moment: str  # what was in flight ("flush", "compaction", "import publish", "idle", ...)
    wal: dict[Key, Values]
    visible: dict[Key, Values]

    @property
    def received(self) -> dict[Key, Values]:
        return {**self.visible, **self.wal}


def freeze_and_kill(data: Path, service: subprocess.Popen[str], importer: subprocess.Popen[str] | None,
                    launched: float) -> Snapshot:
    """SIGSTOP the service (and the importer), snapshot what is durable, SIGKILL both.

    ``launched`` (wall clock) tells a kill during start-up (no status.json written since) from
    one in steady state; tmp files of a crashed run linger until the next open, so a flush or
    compaction is named only once the service is up, an import publish only while it runs.
    """
    procs = [p for p in (service, importer) if p is not None and p.poll() is None]
    for proc in procs:
        proc.send_signal(signal.SIGSTOP)
    try:
        now = in_flight(data)
        if not started_since(data, launched):
            moment = "start-up"
        else:
            moment = "+".join(k for k, on in (("flush", now.flushing()), ("compaction", now.compacting())) if on)
        if importer is not None and importer in procs and now.importing():
            moment = "+".join(filter(None, (moment, "import publish")))
        snapshot = Snapshot(moment or "idle", wal_bars(data), stored_bars(data))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
    return snapshot


def started_since(data: Path, launched: float) -> bool:
    """status.json was written by a service launched at ``launched`` (wall clock) or later."""
    written = status(data).get("written_at")
    return bool(written) and datetime.fromisoformat(written).timestamp() >= launched


# --- the whole data directory ------------------------------------------------------------------


@dataclass
class DatasetReport:
    files: int = 0  # Parquet files under the data directory (bars and tables)
    rows: int = 0  # raw rows in the bars dataset
    keys: int = 0  # rows of the deduplicated view
    duplicated_keys: int = 0  # keys held by more than one raw row (resolved by version)
    problems: list[str] = field(default_factory=list)


def check_dataset(data: Path) -> DatasetReport:
    """Every *.parquet opens in pyarrow and DuckDB; the deduplicated view works and is unique per key.

    Two raw rows of one key are allowed (a correction, a replayed flush, an import beside the
    live bar, a compaction's inputs in their grace period): that is the dedup rule, and the
    view keeps the largest version. What must never happen is a tie on the largest version
    between rows with different values (the view would then pick one arbitrarily), or two
    rows of one key inside one file.
    """
    report = DatasetReport()
    files = sorted(data.rglob("*.parquet"))
    report.files = len(files)
    with duckdb.connect() as con:
        for path in files:
            try:
                table = pq.read_table(path)
                count = con.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0]
                assert count is not None and count[0] == table.num_rows
            except Exception as exc:  # noqa: BLE001 - every unreadable file is reported
                report.problems.append(f"{path}: {exc!r}")
        if not any(dataset_root(data).glob("interval=*/month=*/*.parquet")):
            return report
        glob = str(dataset_root(data) / "interval=*/month=*/*.parquet")
        raw = f"read_parquet('{glob}', hive_partitioning = true, filename = true)"
        report.rows = con.sql(f"SELECT count(*) FROM {raw}").fetchall()[0][0]
        con.sql(f"CREATE VIEW bars AS {bars_relation_sql(data)}")
        report.keys = con.sql("SELECT count(*) FROM bars").fetchall()[0][0]
        dups = con.sql("SELECT count(*) FROM (SELECT 1 FROM bars GROUP BY interval, symbol, open_time "
                       "HAVING count(*) > 1)").fetchall()[0][0]
        if dups:
            report.problems.append(f"{dups} keys twice in the deduplicated view")
        report.duplicated_keys = con.sql(f"SELECT count(*) FROM (SELECT 1 FROM {raw} GROUP BY interval, symbol, "
                                         "open_time HAVING count(*) > 1)").fetchall()[0][0]
        in_file = con.sql(f"SELECT filename, interval, symbol, open_time, count(*) FROM {raw} "
                          "GROUP BY ALL HAVING count(*) > 1 LIMIT 5").fetchall()
        if in_file:
            report.problems.append(f"keys twice within one file: {in_file}")
        values = ", ".join(c for c in (*VALUE_COLUMNS, "is_complete"))
        ties = con.sql(f"""
            WITH top AS (SELECT *, max(version) OVER (PARTITION BY interval, symbol, open_time) AS best FROM {raw})
            SELECT interval, symbol, open_time, count(DISTINCT ({values})) AS variants FROM top
            WHERE version = best GROUP BY ALL HAVING count(DISTINCT ({values})) > 1 LIMIT 5""").fetchall()
        if ties:
            report.problems.append(f"rows tied on the largest version with different values: {ties}")
    return report


def status(data: Path) -> dict[str, Any]:
    try:
        return json.loads((data / "status.json").read_text())
    except (OSError, ValueError):
        return {}
