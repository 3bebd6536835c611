"""Security guarantees, one test each, checked the way an attacker would try them.

1. Symbols are validated everywhere they enter (config, exchangeInfo, archive names, CLI flags,
   WebSocket frames, partition values), so no path ever leaves the data directory.
2. ``klinestore sql`` cannot modify the data (the bytes of the data directory are compared).
3. Every listening socket binds loopback only.
4. Nothing klinestore writes goes through a symlink planted at a name it is about to use,
   and no user-named output lands inside storage's own files.

"No file outside the data directory" is checked by snapshotting the whole temporary tree
before and after: names, kinds, symlink targets and file contents.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
import zipfile
from pathlib import Path
from time import monotonic

import httpx
import pytest

from frames import kline
from klinestore.config import Config, MetricsConfig, StorageConfig, config_from_dict, load_config
from klinestore.core.errors import ConfigError, InvalidInterval, InvalidSymbol
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.dispatcher import Dispatcher
from klinestore.ingest.errors import ProtocolError
from klinestore.ingest.protocol import decode_frame
from klinestore.ingest.sink import MemorySink
from klinestore.ingest.state import MarketState
from klinestore.queries.errors import SqlError
from klinestore.queries.metrics import start_metrics_server
from klinestore.queries.sql import connect, execute
from klinestore.service import Service
from klinestore.sim import SimConfig
from klinestore.sim.errors import SimConfigError
from klinestore.storage import Bar, BarError, BarStore, StorageError, bars_relation_sql, import_archives, read_bars
from klinestore.storage.errors import ArchiveError
from klinestore.storage.fsguard import check_output_path, create_new
from klinestore.storage.status import write_status
from queries_support import build_dataset
from simfixtures import START_MS, SimFactory
from storage_support import T0, kline_csv, write_zip
from support import klinestore_command, subprocess_env

BAD_SYMBOLS = ("../../etc", "BTC/USDT", "..", "BTCUSDT/../../x", "BTC\\USDT", "btc usdt", "X", "")


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with what it is: file contents' digest, symlink target, or dir."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def outside(before: dict[str, str], after: dict[str, str], data: str = "data") -> dict[str, str]:
    """What changed in the temporary tree outside the data directory."""
    keep = lambda rel: rel != data and not rel.startswith(data + os.sep)  # noqa: E731
    old = {k: v for k, v in before.items() if keep(k)}
    new = {k: v for k, v in after.items() if keep(k)}
    return {k: new.get(k, "<deleted>") for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(klinestore_command(*args), env=subprocess_env(), capture_output=True, text=True,
                          timeout=60, cwd=cwd)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("security") / "data", ("BTCUSDT", "ETHUSDT"), 120)


# --- 1. symbols, everywhere they enter -----------------------------------------------------------


@pytest.mark.parametrize("symbol", BAD_SYMBOLS)
def test_config_refuses_path_like_symbols(tmp_path: Path, symbol: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"symbols": ["BTCUSDT", symbol]}))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == "symbols" and "invalid symbol" in str(info.value)


class _HostileExchangeInfo(httpx.AsyncBaseTransport):
    """The real (simulated) exchange, except that exchangeInfo lists names built to escape paths."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.names = names
        self.looks = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path != "/fapi/v1/exchangeInfo":
            return response
        body = json.loads(await response.aread())
        self.looks += 1
        if self.looks > 1:  # after the baseline, so each would be a "new listing" if it were accepted
            template = body["symbols"][0]
            body["symbols"] += [{**template, "symbol": name, "pair": name, "status": "TRADING"} for name in self.names]
        headers = {k: v for k, v in response.headers.items() if k.lower().startswith("x-mbx")}
        return httpx.Response(response.status_code, headers=headers, json=body)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_exchange_info_names_that_are_not_symbols_are_skipped_counted_and_never_written(
    tmp_path: Path, sim_factory: SimFactory
) -> None:
    sim = sim_factory(symbols=("BTCUSDT",), speed=60, seed=7, start_ms=START_MS)
    data = tmp_path / "data"
    config = config_from_dict({
        "symbols": ["BTCUSDT"],
        "websocket": {"base_url": sim.ws_url, "rest_url": sim.rest_url,
                      "streams": {"kline_intervals": ["1m"], "aggtrade": False, "depth": False, "mark_price": False}},
        "storage": {"data_dir": str(data), "flush_interval": 0.5, "wal_fsync_window": 0},
        "jobs": {"listing_refresh_interval": 0.3, "status_interval": 0.3},
    })
    hostile = _HostileExchangeInfo(("../../etc", "BTC/USDT", "..", "ETC/../../PASSWD"))
    before = tree(tmp_path)
    service = Service(config, transport=hostile)

    async def main() -> list[dict[str, object]]:
        try:
            await service.start()
            await service.wait(3.0)
            return await asyncio.to_thread(sim.connections)  # what the exchange was asked to send
        finally:
            await service.stop()

    connections = asyncio.run(main())
    assert hostile.looks >= 3  # the baseline and at least two refreshes saw the hostile names
    status = json.loads((data / "status.json").read_text())
    assert status["counters"]["invalid_listings"] == 4 * (hostile.looks - 1)
    assert status["symbols"] == ["BTCUSDT"] and status["counters"]["closed_bars"] >= 1
    assert [s for conn in connections for s in conn["subscriptions"]] == ["btcusdt@kline_1m"]  # type: ignore[attr-defined]
    after = tree(tmp_path)
    assert outside(before, after) == {}
    written = [rel for rel in after if rel.startswith("data")]
    assert not [rel for rel in written if "etc" in rel.lower() or "passwd" in rel.lower()]
    assert {rel.split(os.sep)[1] for rel in written if os.sep in rel} <= {
        "bars", "wal", "state", "status.json", "tables", "dataqual.duckdb", "dataqual.duckdb.wal"}


def test_ws_frames_with_a_bad_symbol_never_reach_state_or_storage() -> None:
    clock = ExchangeClock()
    state = MarketState(Config().websocket.cache, clock)
    sink = MemorySink()
    dispatcher = Dispatcher(state, sink, clock)
    dispatcher.route("btcusdt@kline_1m")
    smuggled = json.loads(kline(t=T0, x=True))
    smuggled["data"]["s"] = smuggled["data"]["k"]["s"] = "../../ETC"
    with pytest.raises(ProtocolError, match="carries"):  # the parser: a stream's frame must carry its symbol
        decode_frame(json.dumps(smuggled))
    assert dispatcher.dispatch(json.dumps(smuggled).encode(), monotonic()) is None
    assert state.rejected["malformed"] == 1

    foreign = json.loads(kline(t=T0, x=True))
    foreign["stream"] = "../../etc@kline_1m"
    foreign["data"]["s"] = foreign["data"]["k"]["s"] = "../../ETC"
    dispatcher.dispatch(json.dumps(foreign).encode(), monotonic())  # a stream nobody subscribed: dropped, counted
    assert dispatcher.unexpected == 1

    lowered = json.loads(kline(t=T0, x=True))
    lowered["data"]["s"] = "btcusdt"  # same stream, a non-canonical name: the series refuses the bar
    dispatcher.dispatch(json.dumps(lowered).encode(), monotonic())
    assert list(sink.bars) == [] and set(state.klines) == {("BTCUSDT", "1m")}


def test_archive_names_and_zip_members_never_become_paths(tmp_path: Path) -> None:
    data, incoming, elsewhere = tmp_path / "data", tmp_path / "incoming", tmp_path / "elsewhere"
    for folder in (incoming / "nested", elsewhere):
        folder.mkdir(parents=True)
    csv = kline_csv(T0, 60)
    for name in ("..-1m-2024-01-01.csv", ".-1m-2024-01-01.csv", "BTC USDT-1m-2024-01-01.csv", "X-1m-2024-01-01.csv"):
        (incoming / name).write_text(csv)
        with pytest.raises(ArchiveError, match="invalid symbol"):
            import_archives([incoming / name], data, Config().storage)
        (incoming / name).unlink()
    plain = incoming / "plain.csv"
    plain.write_text(csv)
    with pytest.raises(ArchiveError, match="invalid symbol"):
        import_archives([plain], data, Config().storage, symbol="../x", interval="1m")
    with pytest.raises(ArchiveError, match="unknown interval"):
        import_archives([plain], data, Config().storage, symbol="BTCUSDT", interval="../1m")
    plain.unlink()

    # zip-slip: members are read in memory, never extracted, whatever their names say
    slip = incoming / "nested" / "ETHUSDT-1m-2024-01-01.zip"
    with zipfile.ZipFile(slip, "w") as archive:
        archive.writestr("../../../elsewhere/evil.csv", csv)
    two = incoming / "SOLUSDT-1m-2024-01-01.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("../a.csv", csv)
        archive.writestr("SOLUSDT-1m-2024-01-01.csv", csv)
    with pytest.raises(ArchiveError, match="expected one .csv"):
        import_archives([two], data, Config().storage)
    two.unlink()
    # a symlink pointing outside the import directory is read as an archive under its own name
    target = write_zip(elsewhere / "whatever.zip", csv, checksum=False)
    (incoming / "BTCUSDT-1m-2024-01-01.zip").symlink_to(target)
    before = tree(tmp_path)
    # and a path with .. components only says where to read from
    report = import_archives([incoming / "nested" / ".." / "nested" / ".."], data, Config().storage)
    assert report.files == 2 and report.rows == 120
    assert outside(before, tree(tmp_path)) == {}
    assert not list(tmp_path.rglob("evil.csv"))
    assert read_bars(data, "ETHUSDT", "1m").height == read_bars(data, "BTCUSDT", "1m").height == 60


@pytest.mark.parametrize("argv", [
    ["run", "--sim", "--for", "1", "--symbols", "BTCUSDT,../x"],
    ["export", "--symbol", "../x", "--interval", "1m", "--start", "2024-01-01", "--end", "2024-01-02",
     "--format", "csv", "--out", "x.csv"],
    ["export", "--symbol", "BTCUSDT", "--interval", "../../1m", "--start", "2024-01-01", "--end", "2024-01-02",
     "--format", "csv", "--out", "x.csv"],
    ["chart", "--symbol", "BTC/USDT", "--interval", "1h", "--start", "2024-01-01", "--end", "2024-01-02",
     "--out", "x.png"],
    ["import", "--symbol", "../x", "archive.csv"],
    ["dataqual", "--symbol", "../../etc"],
])
def test_cli_flags_refuse_path_like_symbols(tmp_path: Path, argv: list[str]) -> None:
    (tmp_path / "archive.csv").write_text(kline_csv(T0, 5))
    (tmp_path / "data").mkdir()
    before = tree(tmp_path)
    proc = cli(*argv, "--data-dir", "data", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") <= 1 and ("invalid" in proc.stderr or "unknown interval" in proc.stderr), proc.stderr
    assert tree(tmp_path) == before


def test_partition_values_are_checked_before_any_path_is_built(tmp_path: Path) -> None:
    good = Bar("BTCUSDT", "1m", T0, T0 + 59_999, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0, 0.0, 0.0)
    store = BarStore(tmp_path / "data", StorageConfig(wal_fsync_window=0))
    store.open()
    try:
        for symbol, interval in (("../X", "1m"), ("BTC/USDT", "1m"), ("btcusdt", "1m"), ("BTCUSDT", "../1m"),
                                 ("BTCUSDT", "1m/../..")):
            bar = Bar(symbol, interval, T0, T0 + 59_999, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0, 0.0, 0.0)
            with pytest.raises(BarError):
                store.append([bar])
        store.append([good])
        store.flush()
    finally:
        store.close()
    partitions = sorted(str(p.relative_to(tmp_path / "data" / "bars")) for p in (tmp_path / "data" / "bars").glob("*/*"))
    assert partitions == ["interval=1m/month=2024-01"]
    with pytest.raises(InvalidInterval):
        bars_relation_sql(tmp_path / "data", "1m/../..")
    with pytest.raises(InvalidSymbol):
        read_bars(tmp_path / "data", "../BTCUSDT", "1m")


# --- 2. klinestore sql cannot modify the data ------------------------------------------------------

#: Cases the queries engineer's test_sql.py does not already try.
SQL_ATTACKS = [
    "CREATE TABLE t AS SELECT * FROM bars; COPY t TO '{month}/t.parquet' (FORMAT parquet)",
    "CREATE TABLE t AS SELECT * FROM bars; EXPORT DATABASE '{data}/bars'",
    "ATTACH '{data}/bars/x.duckdb' AS w (READ_WRITE)",
    "ATTACH ':memory:' AS m; CREATE TABLE m.t AS SELECT 1",
    "DETACH memory",
    "COPY FROM DATABASE memory TO memory",
    "VACUUM",
    "FORCE INSTALL httpfs",
    "INSTALL '{data}/bars/x.duckdb_extension'",
    "LOAD '{data}/bars/x.duckdb_extension'",
    "SET lock_configuration = false",
    "RESET lock_configuration",
    "SET temp_directory = '{data}/bars'",
    "PRAGMA profiling_output = '{month}/profile.json'",
    "PRAGMA enable_profiling = 'json'",
    "CALL enable_logging(storage = 'file', storage_path = '{data}/bars')",
    "SELECT * FROM read_blob('{out}/secret.txt')",
    "SELECT * FROM read_text('{data}/state/s0000.lock')",
    "SELECT * FROM read_text('{data}/wal/s0000/' || 'x')",
    "SELECT * FROM glob('{out}/*')",
    "SELECT * FROM read_parquet('{data}/bars_spot/../bars/../../secret.txt')",
    "SELECT 1; ATTACH '{data}/bars/y.duckdb'",
    "EXPLAIN COPY (SELECT 1) TO '{month}/x.csv'",
    "WITH x AS (SELECT 1) SELECT * FROM x; COPY (SELECT 1) TO '{month}/x.csv'",
]


@pytest.mark.parametrize("attack", SQL_ATTACKS)
def test_sql_attacks_leave_every_byte_of_the_data_unchanged(dataset: Path, tmp_path: Path, attack: str) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    month = next((dataset / "bars" / "interval=1m").iterdir())
    before, outside_before = tree(dataset), tree(tmp_path)
    con = connect(dataset)
    try:
        with pytest.raises(SqlError) as info:
            execute(con, attack.format(data=dataset, out=tmp_path, month=month)).read_all()
    finally:
        con.close()
    assert "\n" not in str(info.value)
    assert tree(dataset) == before and tree(tmp_path) == outside_before


def test_sql_out_cannot_write_into_the_dataset(dataset: Path, tmp_path: Path) -> None:
    month = next((dataset / "bars" / "interval=1m").iterdir())
    (tmp_path / "link").symlink_to(month)
    query = "SELECT * EXCLUDE (interval) REPLACE (0.0 AS close), 9223372036854775807 AS version FROM bars_1m"
    before = tree(dataset)
    for out in (month / "evil.parquet", tmp_path / "link" / "evil.parquet", dataset / "status.json",
                dataset / "wal" / "s0000" / "x.csv", dataset / "tables" / "dataqual" / "x.parquet"):
        proc = cli("sql", query, "--data-dir", str(dataset), "--format", "parquet", "--out", str(out))
        assert proc.returncode == 1 and "inside klinestore's own files" in proc.stderr, proc.stderr
    proc = cli("export", "--symbol", "BTCUSDT", "--interval", "1m", "--start", "2024-01-01", "--end",
               "2024-01-01T01:00", "--format", "parquet", "--out", str(month / "x.parquet"), "--data-dir", str(dataset))
    assert proc.returncode == 1 and "inside klinestore's own files" in proc.stderr, proc.stderr
    assert tree(dataset) == before
    assert check_output_path(dataset / "exports" / "x.csv", dataset) == dataset / "exports" / "x.csv"


# --- 3. loopback only ------------------------------------------------------------------------------


def test_metrics_refuse_a_public_address_in_config_and_at_bind() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"metrics": {"enabled": True, "host": "0.0.0.0"}})
    assert info.value.key == "metrics.host"
    for host in ("0.0.0.0", "::"):  # a MetricsConfig built by hand skips validation; the bind checks again
        with pytest.raises(ConfigError, match="not a loopback address"):
            start_metrics_server(MetricsConfig(enabled=True, host=host, port=0), dict)  # type: ignore[arg-type]


def test_simulator_refuses_a_public_address() -> None:
    with pytest.raises(SimConfigError, match="loopback"):
        SimConfig(host="0.0.0.0")
    proc = cli("sim", "--host", "0.0.0.0")
    assert proc.returncode == 2 and "invalid choice: '0.0.0.0'" in proc.stderr


def _listening(pid: int) -> list[str]:
    """Local addresses of the TCP sockets in LISTEN state that process ``pid`` holds (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(fields[1][:width])
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_every_listening_socket_of_a_running_service_is_loopback(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"symbols": ["BTCUSDT"], "jobs": {"status_interval": 0.2},
                                  "metrics": {"enabled": True, "port": 0}}))
    proc = subprocess.Popen(klinestore_command("run", "--sim", "--for", "20", "--config", str(config), "--data-dir",
                                               str(tmp_path / "data")), env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = monotonic() + 30
        while monotonic() < deadline and not (tmp_path / "data" / "status.json").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        sockets = _listening(proc.pid)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert len(sockets) >= 2  # the in-process simulator's WebSocket and REST ports, at least
    loopback4, loopback6 = "0100007F", "0" * 24 + "01000000"  # 127.0.0.1 and ::1 as /proc prints them
    assert all(addr in (loopback4, loopback6) for addr in sockets), sockets


# --- 4. no planted symlink is followed ------------------------------------------------------------


def test_a_planted_symlink_at_a_temporary_name_is_replaced_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    data = tmp_path / "data"
    data.mkdir()
    status = data / "status.json"
    (data / f".status.json.{os.getpid()}.tmp").symlink_to(victim)
    write_status(status, {"running": True})
    assert json.loads(status.read_text()) == {"running": True} and not status.is_symlink()

    plain = tmp_path / "plain"
    plain.symlink_to(victim)
    with create_new(plain) as handle:
        handle.write(b"new")
    assert plain.read_bytes() == b"new" and not plain.is_symlink()
    assert victim.read_text() == "precious"


def test_exports_never_write_through_a_planted_symlink(dataset: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / ".btc.csv.tmp").symlink_to(victim)
    (tmp_path / "out.csv").symlink_to(victim)  # the final name: replaced by the rename, not written through
    proc = cli("export", "--symbol", "BTCUSDT", "--interval", "1m", "--start", "2024-01-01", "--end", "2024-01-01T01:00",
               "--format", "csv", "--out", str(tmp_path / "btc.csv"), "--data-dir", str(dataset))
    assert proc.returncode == 0, proc.stderr
    proc = cli("sql", "SELECT 1 AS x", "--data-dir", str(dataset), "--out", str(tmp_path / "out.csv"))
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious"
    assert (tmp_path / "btc.csv").read_text().count("\n") == 61 and not (tmp_path / "out.csv").is_symlink()


def test_storage_refuses_planted_lock_and_wal_symlinks(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    data = tmp_path / "data"
    (data / "state").mkdir(parents=True)
    (data / "state" / "s0000.lock").symlink_to(victim)
    config = Config().storage
    with pytest.raises(StorageError, match="lock"):
        BarStore(data, config).open()
    (data / "state" / "s0000.lock").unlink()
    (data / "wal" / "s0000").mkdir(parents=True)
    (data / "wal" / "s0000" / f"{1:020d}.wal").symlink_to(victim)  # replaying it would "repair" (truncate) the victim
    with pytest.raises(StorageError, match="symlink"):
        BarStore(data, config).open()
    assert victim.read_text() == "precious"
