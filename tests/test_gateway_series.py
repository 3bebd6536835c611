"""The gateway's futures series over a real service on the simulator: mark and index klines,
funding and aggTrades are the exchange's rows, including the ones not yet flushed to Parquet.

One service (WebSocket-only, every aggTrade kept, a flush only when the test asks for one)
runs for the module, from one minute and a half before a funding time. The references are
the simulator's truth (``/sim/truth?kind=...``) and its own REST answer to the same query.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from klinestore.core.intervals import MINUTE_MS
from klinestore.service import Service
from klinestore.sim import SimThread
from klinestore.storage import read_agg_trades, read_funding, read_price_bars
from simfixtures import START_MS, SimFactory, get
from support import klinestore_command, subprocess_env
from test_gateway import Running
from test_service import service_config

SYMBOL = "BTCUSDT"
FUNDING_AT = START_MS  # 00:00 UTC: a funding time
EARLY: dict[str, Any] = {}  # answers taken before the first flush


def wait(what: str, ready: Any, seconds: float = 40.0) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimThread, Running]]:
    sim = SimThread(symbols=(SYMBOL,), speed=60, seed=11, start_ms=FUNDING_AT - 90_000).start()
    data = tmp_path_factory.mktemp("gateway_series") / "data"
    config = service_config(sim, data, **{"gateway.enabled": True, "gateway.port": 0, "gateway.weight_limit": 100_000,
                                          "storage.persist_aggtrades": True, "storage.flush_interval": 3600,
                                          "websocket.streams.kline_intervals": ["1m"]})
    run = Running(Service(config))
    try:
        out = run.service.feed.series
        assert out is not None
        wait("three mark minutes and the funding event",
             lambda: run.read(lambda: len(out.recent.rows("mark", SYMBOL)) >= 3 and out.recent.rows("funding", SYMBOL)))
        query = f"/fapi/v1/fundingRate?symbol={SYMBOL}&startTime={FUNDING_AT}"
        status, _, body = get(f"{run.service.gateway.rest_url}{query}")  # type: ignore[union-attr]
        EARLY["funding"] = (status, body, read_funding(data, SYMBOL).height)
        run.call(run.service.flush())  # these reach Parquet; what comes next stays in memory (and the WAL)
        stored = read_price_bars(data, "mark", SYMBOL, "1m").height
        wait("two more mark minutes", lambda: run.read(lambda: len(out.recent.rows("mark", SYMBOL)) >= 2))
        assert stored >= 3 and run.read(lambda: len(out.recent.rows("agg_trades", SYMBOL))) > 0
        yield sim, run
    finally:
        run.stop()
        sim.stop()


def url(run: Running) -> str:
    return run.service.gateway.rest_url  # type: ignore[union-attr]


def both(sim: SimThread, run: Running, query: str) -> tuple[tuple[int, Any], tuple[int, Any]]:
    ours, theirs = get(f"{url(run)}{query}"), get(f"{sim.rest_url}{query}")
    return (ours[0], ours[2]), (theirs[0], theirs[2])


def minutes_kept(run: Running, kind: str) -> tuple[int, int, list[int]]:
    """First and last closed minute the gateway can serve, and the minutes not yet in Parquet."""
    out = run.service.feed.series
    stored = read_price_bars(run.service.data_dir, kind, SYMBOL, "1m")
    first = int(stored["open_time"][0].timestamp() * 1000)
    recent = run.read(lambda: [b.open_time for b in out.recent.rows(kind, SYMBOL)])  # type: ignore[union-attr]
    stored_times = {int(t.timestamp() * 1000) for t in stored["open_time"]}
    return first, recent[-1], [t for t in recent if t not in stored_times]


@pytest.mark.parametrize(("kind", "path", "name"), [("mark", "markPriceKlines", "symbol"),
                                                     ("index", "indexPriceKlines", "pair")])
def test_mark_and_index_klines_are_the_exchanges_including_unflushed_minutes(
    running: tuple[SimThread, Running], kind: str, path: str, name: str
) -> None:
    sim, run = running
    first, last, unflushed = minutes_kept(run, kind)
    assert unflushed  # the answer must reach past Parquet into memory
    query = f"/fapi/v1/{path}?{name}={SYMBOL}&interval=1m&startTime={first}&endTime={last}"
    ours, theirs = both(sim, run, query)
    assert ours == theirs and ours[0] == 200  # every field, as the exchange prints it
    truth = {r[0]: r for r in sim.truth_of(SYMBOL, kind)}
    rows = ours[1]
    assert [r[0] for r in rows] == list(range(first, last + 1, MINUTE_MS)) and all(r == truth[r[0]] for r in rows)
    assert set(unflushed) <= {r[0] for r in rows}

    # No startTime: the newest minutes, the one being built last (open, its seconds so far).
    _, _, newest = get(f"{url(run)}/fapi/v1/{path}?{name}={SYMBOL}&interval=1m&limit=3")
    assert len(newest) == 3 and newest[-1][0] >= last and 1 <= newest[-1][8] <= 60
    assert all(r == truth[r[0]] for r in newest if r[0] in truth and r[8] == 60)
    # The exchange's errors, byte for byte.
    for bad in (f"{name}={SYMBOL}&interval=1m&limit=0", f"{name}={SYMBOL}&interval=7m", "interval=1m",
                f"{name}={SYMBOL}&interval=1m&startTime=5&endTime=4", f"{name}=NOPEUSDT&interval=1m"):
        ours, theirs = both(sim, run, f"/fapi/v1/{path}?{bad}")
        assert ours == theirs and ours[0] == 400, bad


def test_ccxt_fetch_ohlcv_mark_and_index(running: tuple[SimThread, Running]) -> None:
    ccxt = pytest.importorskip("ccxt", reason="ccxt is not installed (pip install -e '.[ccxt]')")
    sim, run = running
    exchange = client(ccxt, url(run))
    for kind in ("mark", "index"):
        first, last, _ = minutes_kept(run, kind)
        n = (last - first) // MINUTE_MS + 1
        bars = exchange.fetch_ohlcv(f"{SYMBOL[:3]}/USDT:USDT", "1m", since=first, limit=n, params={"price": kind})
        truth = {r[0]: [r[0], *(float(x) for x in r[1:5]), 0.0] for r in sim.truth_of(SYMBOL, kind)}
        assert len(bars) == n and bars == [truth[b[0]] for b in bars], kind


def test_higher_intervals_fold_complete_buckets_only(running: tuple[SimThread, Running]) -> None:
    sim, run = running
    wait("a whole 3m bucket", lambda: minutes_kept(run, "mark")[1] - minutes_kept(run, "mark")[0] >= 6 * MINUTE_MS)
    truth = {r[0]: r for r in sim.truth_of(SYMBOL, "mark", "3m")}
    rows = get(f"{url(run)}/fapi/v1/markPriceKlines?symbol={SYMBOL}&interval=3m&limit=10")[2]
    closed = [r for r in rows if r[0] in truth]
    assert closed and all(r == truth[r[0]] for r in closed)
    # the bucket the service started in (its first seconds unseen) is missing, not a different bar
    first_bar = read_price_bars(run.service.data_dir, "mark", SYMBOL, "1m")["open_time"][0].timestamp() * 1000
    assert all(r[0] >= first_bar for r in rows)


def test_funding_rate_is_the_exchanges(running: tuple[SimThread, Running]) -> None:
    sim, run = running
    assert read_funding(run.service.data_dir, SYMBOL).height == 1  # the event at FUNDING_AT, flushed
    for query in (f"symbol={SYMBOL}&startTime={FUNDING_AT}", f"startTime={FUNDING_AT - 1}&limit=1",
                  f"symbol={SYMBOL}&startTime={FUNDING_AT}&endTime={FUNDING_AT}", "limit=1001",
                  f"symbol={SYMBOL}&startTime=9&endTime=8", "symbol=NOPEUSDT"):
        ours, theirs = both(sim, run, f"/fapi/v1/fundingRate?{query}")
        assert ours == theirs, query
    body = get(f"{url(run)}/fapi/v1/fundingRate?symbol={SYMBOL}&startTime={FUNDING_AT}")[2]
    truth = [t for t in sim.truth_of(SYMBOL, "funding") if t["fundingTime"] >= FUNDING_AT]
    assert body == truth and len(body) == 1 and body[0]["markPrice"]

    ccxt = pytest.importorskip("ccxt", reason="ccxt is not installed (pip install -e '.[ccxt]')")
    history = client(ccxt, url(run)).fetch_funding_rate_history(f"{SYMBOL[:3]}/USDT:USDT", since=FUNDING_AT)
    assert [(h["timestamp"], h["fundingRate"]) for h in history] == [(t["fundingTime"], float(t["fundingRate"]))
                                                                    for t in truth]


def test_funding_served_before_any_flush(running: tuple[SimThread, Running]) -> None:
    """Asked before the first flush (the event only in memory and the WAL), the answer was the exchange's."""
    sim, run = running
    status, body, stored_then = EARLY["funding"]
    assert stored_then == 0 and status == 200
    assert body == [t for t in sim.truth_of(SYMBOL, "funding") if t["fundingTime"] >= FUNDING_AT] and body


def trades_kept(run: Running) -> tuple[list[dict[str, Any]], list[int]]:
    """The trades stored in Parquet (as the exchange's objects' ids and times) and the ids only in memory."""
    stored = read_agg_trades(run.service.data_dir, SYMBOL)
    out = run.service.feed.series
    recent = run.read(
        lambda: [t.agg_trade_id for t in out.recent.rows("agg_trades", SYMBOL)])  # type: ignore[union-attr]
    ids = set(stored["agg_trade_id"].to_list())
    rows = [{"a": a, "T": int(t.timestamp() * 1000)} for a, t in stored.select("agg_trade_id", "transact_time").rows()]
    return rows, [a for a in recent if a not in ids]


def test_agg_trades_are_the_exchanges_including_unflushed(running: tuple[SimThread, Running]) -> None:
    sim, run = running
    stored, unflushed = trades_kept(run)
    assert len(stored) > 60 and unflushed
    a0, t0 = stored[10]["a"], stored[10]["T"]
    last_t = max(r["T"] for r in stored)
    newest = sim.now_ms() - 30_000  # received by the service by now
    queries = [
        f"symbol={SYMBOL}&fromId={a0}&endTime={newest}&limit=1000",  # from the store into memory
        f"symbol={SYMBOL}&fromId={unflushed[0]}&limit=5",  # memory alone
        f"symbol={SYMBOL}&startTime={t0}&endTime={newest}&limit=1000",
        f"symbol={SYMBOL}&startTime={t0}&limit=7",
        f"symbol={SYMBOL}&endTime={last_t}&limit=20",  # the newest 20 up to a time: the store
        f"symbol={SYMBOL}&endTime={newest}&limit=30",
        f"symbol={SYMBOL}&fromId={a0}&endTime={last_t}&limit=1000",
        f"symbol={SYMBOL}&startTime={t0}&endTime={t0 + 3_600_001}",  # more than an hour: -1127
        f"symbol={SYMBOL}&limit=1001", f"symbol={SYMBOL}&fromId=x", "limit=5", "symbol=NOPEUSDT",
    ]
    for query in queries:
        ours, theirs = both(sim, run, f"/fapi/v1/aggTrades?{query}")
        assert ours == theirs, query
    body = get(f"{url(run)}/fapi/v1/aggTrades?{queries[0]}")[2]
    truth = {t["a"]: t for t in sim.truth_of(SYMBOL, "aggTrades")}
    assert len(body) > len(stored) - 10 and all(t == truth[t["a"]] for t in body)
    assert set(unflushed) & {t["a"] for t in body} and body[-1]["T"] <= newest
    assert run.read(lambda: run.service.gateway.trades.store_reads) >= 1  # type: ignore[union-attr]

    ccxt = pytest.importorskip("ccxt", reason="ccxt is not installed (pip install -e '.[ccxt]')")
    trades = client(ccxt, url(run)).fetch_trades(f"{SYMBOL[:3]}/USDT:USDT", since=t0, limit=50)
    assert len(trades) == 50 and [int(t["id"]) for t in trades] == [t["a"] for t in body[:50]]
    assert all(t["price"] == float(truth[int(t["id"])]["p"]) and t["amount"] == float(truth[int(t["id"])]["q"])
               for t in trades)


def client(ccxt: Any, rest: str) -> Any:
    api = {key: f"{rest}/fapi/{version}"
           for key, version in (("fapiPublic", "v1"), ("fapiPublicV2", "v2"), ("fapiPublicV3", "v3"))}
    exchange = ccxt.binanceusdm({"enableRateLimit": False, "timeout": 15_000, "urls": {"api": api}})
    exchange.load_markets()
    return exchange


def test_after_a_kill_9_the_rows_only_in_the_wal_are_served(tmp_path: Path, sim_factory: SimFactory) -> None:
    """``klinestore run`` killed before any flush: the next service's gateway serves the rows its
    WAL gave back (published before the gateway opens), equal to the exchange's."""
    data = tmp_path / "data"
    sim = sim_factory(symbols=(SYMBOL,), speed=60, seed=5, start_ms=FUNDING_AT - 90_000)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "symbols": [SYMBOL], "jobs": {"status_interval": 0.3},
        "websocket": {"base_url": sim.ws_url, "rest_url": sim.rest_url},
        "storage": {"flush_interval": 3600, "persist_aggtrades": True},  # nothing reaches Parquet before the kill
    }))
    proc = subprocess.Popen(klinestore_command("run", "--data-dir", str(data), "--config", str(config)),
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    written: dict[str, int] = {}
    try:
        def ready() -> bool:
            nonlocal written
            try:
                written = json.loads((data / "status.json").read_text()).get("mark_series", {}).get("written", {})
            except (OSError, ValueError):
                return False
            return written.get("mark", 0) >= 2 and written.get("funding", 0) >= 1
        wait("two mark minutes and a funding event in status.json", ready, 60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        proc.kill()
        proc.communicate()
    assert not list((data / "mark_bars").glob("**/*.parquet"))  # all of it only in the WAL
    service_conf = service_config(sim, data, **{"gateway.enabled": True, "gateway.port": 0,
                                                "storage.persist_aggtrades": True, "storage.flush_interval": 3600,
                                                "websocket.streams.kline_intervals": ["1m"]})
    run = Running(Service(service_conf))
    try:
        rest = url(run)
        mark = get(f"{rest}/fapi/v1/markPriceKlines?symbol={SYMBOL}&interval=1m&startTime=0&limit={written['mark']}")
        truth = {r[0]: r for r in sim.truth_of(SYMBOL, "mark")}
        assert mark[0] == 200 and len(mark[2]) == written["mark"] and all(r == truth[r[0]] for r in mark[2])
        funding = get(f"{rest}/fapi/v1/fundingRate?symbol={SYMBOL}&startTime={FUNDING_AT}&endTime={FUNDING_AT}")[2]
        assert funding == [t for t in sim.truth_of(SYMBOL, "funding") if t["fundingTime"] == FUNDING_AT]
    finally:
        run.stop()


def test_each_answer_charges_binances_weight(running: tuple[SimThread, Running]) -> None:
    """aggTrades 20, fundingRate 1, mark/index klines by limit (5 for 1000), to the asking client's budget."""
    _, run = running
    used = []
    for query in (f"aggTrades?symbol={SYMBOL}&limit=5", f"fundingRate?symbol={SYMBOL}",
                  f"markPriceKlines?symbol={SYMBOL}&interval=1m&limit=1000",
                  f"indexPriceKlines?pair={SYMBOL}&interval=1m&limit=50"):
        request = urllib.request.Request(f"{url(run)}/fapi/v1/{query}", headers={"X-MBX-APIKEY": "weights-test"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            used.append(int(answer.headers["X-MBX-USED-WEIGHT-1M"]))
    assert used == [20, 21, 26, 27]
