"""Mark/index bars and funding: built from markPrice@1s, stored like bars, equal to the exchange's truth."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from klinestore import queries as kq
from klinestore.config import StorageConfig
from klinestore.core.intervals import MINUTE_MS
from klinestore.ingest.markbars import MarkSeriesBuilder
from klinestore.ingest.protocol.events import MarkPriceEvent
from klinestore.queries.series import funding_rows, price_klines
from klinestore.service import Service
from klinestore.storage import BarError, SeriesStores, funding_row, read_funding, read_price_bars
from simfixtures import START_MS, SimFactory
from test_aggtrades import assert_trades_equal_truth
from test_ingest_sim import until
from test_service import service_config

F = START_MS  # 2024-05-01T00:00Z: a funding time


def ev(second: int, mark: float, index: float | None = 100.0, funding_time: int = F, rate: str = "0.0001") -> MarkPriceEvent:
    return MarkPriceEvent(E=second, s="BTCUSDT", p=mark, T=funding_time, i=index, r=rate)


def test_a_minute_is_the_ohlc_of_its_seconds_and_a_partial_minute_is_left_out() -> None:
    builder = MarkSeriesBuilder()
    t0 = F - 3 * MINUTE_MS
    out = []
    for s in range(30, 60):  # the second half of a minute: the stream started mid-minute
        out += builder.update(ev(t0 + s * 1000, 100.0 + s))
    for s in range(60):
        out += builder.update(ev(t0 + MINUTE_MS + s * 1000, 200.0 + (s % 7), index=50.0 - s))
    out += builder.update(ev(t0 + 2 * MINUTE_MS, 1.0))  # the next minute's first second closes it
    assert builder.partial_minutes == 1
    [(k1, mark), (k2, index)] = out
    assert (k1, k2) == ("mark", "index")
    assert (mark.open_time, mark.close_time) == (t0 + MINUTE_MS, t0 + 2 * MINUTE_MS - 1)
    assert (mark.open, mark.high, mark.low, mark.close) == (200.0, 206.0, 200.0, 200.0 + 59 % 7)
    assert (index.open, index.high, index.low, index.close) == (50.0, 50.0, -9.0, -9.0)
    assert builder.update(ev(t0 + 2 * MINUTE_MS, 1.0)) == [] and builder.stale == 1  # a second seen twice


def test_a_funding_event_takes_the_periods_rate_and_the_mark_at_its_second() -> None:
    builder = MarkSeriesBuilder()
    builder.update(ev(F - 1000, 100.0, rate="-0.00012"))
    [(kind, row)] = [r for r in builder.update(ev(F, 101.5, funding_time=F + 8 * 3600_000, rate="0.0002"))
                     if r[0] == "funding"]
    assert (kind, row.open_time, row.open, row.close) == ("funding", F, -0.00012, 101.5)
    # the second at F missed (a reconnect): the rate is known, the mark price is not
    builder = MarkSeriesBuilder()
    builder.update(ev(F - 1000, 100.0))
    [(_, row)] = [r for r in builder.update(ev(F + 2000, 99.0, funding_time=F + 8 * 3600_000)) if r[0] == "funding"]
    assert row.open == 0.0001 and row.close != row.close  # NaN: NULL in SQL
    # in fallback mode such an event is left to REST, which knows its mark price
    builder = MarkSeriesBuilder(unknown_mark=False)
    builder.update(ev(F - 1000, 100.0))
    assert [r for r in builder.update(ev(F + 2000, 99.0, funding_time=F + 8 * 3600_000)) if r[0] == "funding"] == []
    assert builder.funding_left == 1


def test_series_are_stored_deduplicated_and_queryable(tmp_path: Path) -> None:
    from klinestore.storage import price_bar

    stores = SeriesStores(tmp_path, StorageConfig(resample_intervals=("5m",)))
    stores.open()
    mark = stores.sinks["mark"]
    mark.append([price_bar("BTCUSDT", "1m", F + m * MINUTE_MS, (1.0 + m, 2.0 + m, 0.5, 1.5 + m)) for m in range(5)])
    stores.sinks["funding"].append([funding_row("BTCUSDT", F, 0.0001, 60000.5), funding_row("BTCUSDT", F + 8 * 3600_000, -0.0002, None)])
    stores.flush()
    stores.sinks["funding"].append([funding_row("BTCUSDT", F, 0.0003, 60001.0, source="rest")])  # a correction wins
    with pytest.raises(BarError):
        stores.sinks["funding"].append([funding_row("BTCUSDT", F + 1, 0.0001, 1.0)])  # not a whole minute: refused
    stores.close()
    got = read_funding(tmp_path, "BTCUSDT")
    assert got.rows() == [("BTCUSDT", got["funding_time"][0], 0.0003, 60001.0), ("BTCUSDT", got["funding_time"][1], -0.0002, None)]
    five = read_price_bars(tmp_path, "mark", "BTCUSDT", "5m")
    assert five.select("open", "high", "low", "close", "source").rows() == [(1.0, 6.0, 0.5, 5.5, "resample")]
    sql = kq.sql("SELECT count(*) AS n, max(high) AS h FROM mark_bars_1m", data_dir=tmp_path)
    assert sql.rows() == [(5, 6.0)]
    assert kq.sql("SELECT funding_rate, mark_price FROM funding ORDER BY funding_time", data_dir=tmp_path).rows() == [
        (0.0003, 60001.0), (-0.0002, None)]
    assert kq.sql("SELECT count(*) FROM index_bars", data_dir=tmp_path).item() == 0  # typed and empty
    assert kq.sql("SELECT count(*) FROM bars", data_dir=tmp_path).item() == 0  # klines untouched
    rows = funding_rows(tmp_path, "BTCUSDT", start_ms=F, limit=1)
    assert [(r.funding_time, r.funding_rate, r.mark_price) for r in rows] == [(F, 0.0003, 60001.0)]
    assert [k.open_time for k in price_klines(tmp_path, "mark", "BTCUSDT", "1m", limit=2)] == [
        F + 3 * MINUTE_MS, F + 4 * MINUTE_MS]


def truth_frames(sim: Any, symbol: str) -> tuple[dict[int, tuple[float, ...]], dict[int, tuple[float, ...]], dict[int, tuple[float, float]]]:
    mark = {r[0]: tuple(float(v) for v in r[1:5]) for r in sim.truth_of(symbol, "mark")}
    index = {r[0]: tuple(float(v) for v in r[1:5]) for r in sim.truth_of(symbol, "index")}
    funding = {f["fundingTime"]: (float(f["fundingRate"]), float(f["markPrice"])) for f in sim.truth_of(symbol, "funding")}
    return mark, index, funding


def assert_equal_truth(data: Path, sim: Any, symbol: str, *, minutes: int, fallback: bool, complete: bool = True) -> None:
    """Every stored row is the exchange's; in fallback mode (``complete``) nothing of the last day is missing either."""
    mark, index, funding = truth_frames(sim, symbol)
    for kind, truth in (("mark", mark), ("index", index)):
        stored = kq.sql(f"SELECT epoch_ms(open_time), open, high, low, close, source, is_complete FROM {kind}_bars_1m "
                        f"WHERE symbol = '{symbol}' ORDER BY open_time", data_dir=data).rows()
        assert len(stored) >= minutes, (kind, len(stored))
        for t, o, h, low, c, source, whole in stored:
            assert (o, h, low, c) == truth[t] and whole and source in (("ws", "rest") if fallback else ("ws",)), (kind, t)
        if fallback and complete:  # the REST fill: every minute of the day before the last stored one
            times = [row[0] for row in stored]
            assert times == list(range(times[0], times[-1] + 1, MINUTE_MS)) and len(times) > 1000, kind
            assert set(times) <= set(truth)
    got = {int(t): (r, m) for t, r, m in kq.sql(
        f"SELECT epoch_ms(funding_time), funding_rate, mark_price FROM funding WHERE symbol = '{symbol}'", data_dir=data).rows()}
    assert got[F] == funding[F] and set(got) <= set(funding)
    assert all(got[t] == funding[t] for t in got)
    if fallback and complete:  # the day's funding before the start, from REST
        assert {F - 8 * 3600_000, F - 16 * 3600_000} <= set(got)


@pytest.mark.parametrize("mode", ["websocket_only", "fallback"])
def test_stored_mark_index_and_funding_equal_the_exchanges_truth(tmp_path: Path, sim_factory: SimFactory, mode: str) -> None:
    data = tmp_path / "data"
    sim = sim_factory(symbols=("BTCUSDT",), speed=60, seed=7, start_ms=F - 2 * MINUTE_MS)
    changes: dict[str, Any] = {"symbols": ["BTCUSDT"]}
    if mode == "fallback":
        changes.update({"modes.websocket_only_klines": False, "modes.disable_rest_fallback": False})
    service = Service(service_config(sim, data, **changes))

    async def main() -> None:
        await service.start()
        try:
            series = service.feed.series
            assert series is not None
            await until(lambda: (service.feed.clock.now_ms() or 0) > F + 4 * MINUTE_MS and series.written["mark"] >= 4,
                        timeout=30, what="4 minutes past the funding at 00:00")
        finally:
            await service.stop()

    asyncio.run(main())
    assert_equal_truth(data, sim, "BTCUSDT", minutes=4, fallback=mode == "fallback")


@pytest.mark.parametrize("mode", ["websocket_only", "fallback"])
def test_a_kill_9_loses_no_mark_index_funding_or_trade_row(tmp_path: Path, sim_factory: SimFactory, mode: str) -> None:
    """``klinestore run`` killed with SIGKILL before any flush: the WAL gives every row back (mark, index,
    funding, aggTrades), equal to truth."""
    import json
    import signal
    import subprocess
    import time

    from support import klinestore_command, subprocess_env

    data = tmp_path / "data"
    sim = sim_factory(symbols=("BTCUSDT",), speed=60, seed=7, start_ms=F - 3 * MINUTE_MS)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "symbols": ["BTCUSDT"], "jobs": {"status_interval": 0.3},
        "websocket": {"base_url": sim.ws_url, "rest_url": sim.rest_url},
        "storage": {"flush_interval": 3600, "persist_aggtrades": True},  # nothing reaches Parquet before the kill
        **({"modes": {"websocket_only_klines": False, "disable_rest_fallback": False}} if mode == "fallback" else {}),
    }))
    proc = subprocess.Popen(klinestore_command("run", "--data-dir", str(data), "--config", str(config)),
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    status_file, written = data / "status.json", {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if status_file.exists():
                status = json.loads(status_file.read_text())
                written = status.get("mark_series", {}).get("written", {})
                past_funding = (status.get("exchange_time_ms") or 0) > F + 2 * MINUTE_MS  # the stream saw 00:00
                if past_funding and written.get("mark", 0) >= 3 and written.get("agg_trades", 0) >= 20:
                    break
            time.sleep(0.1)
        else:
            pytest.fail(f"no funding event and 3 mark bars in status.json: {written}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        proc.kill()
        _, stderr = proc.communicate()
    assert "Traceback" not in stderr, stderr[-2000:]
    assert not list((data / "mark_bars").glob("**/*.parquet"))  # all of it was only in the WAL
    stores = SeriesStores(data, StorageConfig(persist_aggtrades=True))
    states = stores.open()  # replays the WAL; closing publishes it
    assert stores.trades_replayed >= written["agg_trades"]
    stores.close()
    assert_trades_equal_truth(data, sim, "BTCUSDT", at_least=written["agg_trades"])
    assert states["mark"].replayed_bars >= written["mark"] and states["funding"].replayed_bars >= 1
    # (killed before the fill's second run: the minutes between its first and the stream's first are not there yet)
    assert_equal_truth(data, sim, "BTCUSDT", minutes=written["mark"], fallback=mode == "fallback", complete=False)
    mark_minutes = kq.sql("SELECT count(*) FROM mark_bars_1m", data_dir=data).item()
    assert mark_minutes >= written["mark"]


def test_series_files_are_compacted_and_a_damaged_one_is_quarantined(tmp_path: Path) -> None:
    from klinestore.storage import price_bar

    config = StorageConfig(resample_intervals=(), compaction_min_files=3, compaction_grace=0)
    stores = SeriesStores(tmp_path, config)
    stores.open()
    for m in range(6):
        stores.sinks["mark"].append([price_bar("BTCUSDT", "1m", F + m * MINUTE_MS, (1.0, 2.0, 0.5, 1.5))])
        stores.flush()
    mark_files = lambda: sorted((tmp_path / "mark_bars").glob("interval=1m/month=*/*.parquet"))  # noqa: E731
    assert len(mark_files()) == 6 and all("-m0000-" in p.name for p in mark_files())
    stores.compact()
    assert len(mark_files()) < 6 and read_price_bars(tmp_path, "mark", "BTCUSDT", "1m").height == 6
    stores.close()
    damaged = mark_files()[0]
    damaged.write_bytes(b"PAR1 not a parquet file PAR1")
    again = SeriesStores(tmp_path, config)
    states = again.open()
    again.close()
    assert [q["file"] for q in states["mark"].quarantined] == [str(damaged.relative_to(tmp_path))]
    assert not damaged.exists() and (tmp_path / "quarantine" / damaged.relative_to(tmp_path)).exists()
