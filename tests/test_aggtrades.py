"""agg_trades: every aggTrade received kept by day, deduplicated, equal to the exchange's, across a kill -9."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from klinestore import queries as kq
from klinestore.config import StorageConfig
from klinestore.core.intervals import MINUTE_MS
from klinestore.service import Service
from klinestore.storage import AggTrade, TradeStore, read_agg_trades, read_bars
from simfixtures import START_MS, SimFactory
from test_ingest_sim import until
from test_service import service_config

DAY = 86_400_000


def trade(i: int, t: int, price: float = 100.5) -> AggTrade:
    return AggTrade("BTCUSDT", i, price, 0.25 * i, 10 * i, 10 * i + 2, t, i % 2 == 0)


def test_trades_are_stored_by_day_deduplicated_and_compacted(tmp_path: Path) -> None:
    store = TradeStore(tmp_path, StorageConfig(compaction_min_files=3, compaction_grace=0))
    assert store.open() == 0
    day_end = START_MS + DAY
    store.append([trade(1, day_end - 2), trade(2, day_end - 1)])
    store.flush()
    store.append([trade(2, day_end - 1), trade(3, day_end)])  # a replayed trade, and the next day
    store.flush()
    store.append([trade(4, day_end + 5)])
    store.flush()
    days = sorted(p.name for p in (tmp_path / "agg_trades").iterdir())
    assert days == ["day=2024-05-01", "day=2024-05-02"]
    got = read_agg_trades(tmp_path, "BTCUSDT")
    assert got["agg_trade_id"].to_list() == [1, 2, 3, 4]
    assert got.row(2, named=True)["quantity"] == 0.75 and got.row(2, named=True)["is_buyer_maker"] is False
    store.compact()  # the closed day's two files become one; today's two (the newest trade's day) wait for three
    counts = {d.name: len(list(d.glob("*.parquet"))) for d in (tmp_path / "agg_trades").iterdir()}
    assert counts == {"day=2024-05-01": 1, "day=2024-05-02": 2}
    store.close()
    assert read_agg_trades(tmp_path, "BTCUSDT", start_ms=day_end).get_column("agg_trade_id").to_list() == [3, 4]
    assert kq.sql("SELECT count(*), sum(agg_trade_id) FROM agg_trades", data_dir=tmp_path).rows() == [(4, 10)]
    assert kq.agg_trades("BTCUSDT", data_dir=tmp_path).height == 4


def truth_trades(sim: Any, symbol: str) -> dict[int, tuple[Any, ...]]:
    return {t["a"]: (float(t["p"]), float(t["q"]), t["f"], t["l"], t["T"], t["m"]) for t in sim.truth_of(symbol, "aggTrades")}


def assert_trades_equal_truth(data: Path, sim: Any, symbol: str, *, at_least: int) -> None:
    truth = truth_trades(sim, symbol)
    stored = read_agg_trades(data, symbol)
    ids = stored["agg_trade_id"].to_list()
    assert len(ids) >= at_least and ids == list(range(ids[0], ids[-1] + 1)), "every trade from the first on"
    for row in read_agg_trades(data, symbol).iter_rows(named=True):
        t = int(row["transact_time"].timestamp() * 1000)
        assert (row["price"], row["quantity"], row["first_trade_id"], row["last_trade_id"], t,
                row["is_buyer_maker"]) == truth[row["agg_trade_id"]]


def test_pages_of_trades_by_id_and_the_newest_across_days(tmp_path: Path) -> None:
    """What a gateway's ``aggTrades`` asks the store: the first ``limit`` from an id, the last
    ``limit`` up to a time (read from the newest day back), both by id."""
    store = TradeStore(tmp_path, StorageConfig())
    store.open()
    day_end = START_MS + DAY
    store.append([trade(i, day_end - 100 + i) for i in range(1, 200)])  # 99 trades one day, 100 the next
    store.flush()
    store.close()
    ids = read_agg_trades(tmp_path, "BTCUSDT", from_id=50, limit=70)["agg_trade_id"].to_list()
    assert ids == list(range(50, 120))
    assert read_agg_trades(tmp_path, "BTCUSDT", end_ms=day_end + 50, limit=5, newest=True)["agg_trade_id"].to_list() \
        == [145, 146, 147, 148, 149]
    across = read_agg_trades(tmp_path, "BTCUSDT", end_ms=day_end + 3, limit=6, newest=True)["agg_trade_id"].to_list()
    assert across == [97, 98, 99, 100, 101, 102]  # three from each day
    everything = read_agg_trades(tmp_path, "BTCUSDT", limit=500, newest=True)["agg_trade_id"].to_list()
    assert everything == list(range(1, 200))
    assert read_agg_trades(tmp_path, "ETHUSDT", limit=5, newest=True).height == 0


def test_the_service_keeps_every_aggtrade_it_receives(tmp_path: Path, sim_factory: SimFactory) -> None:
    data = tmp_path / "data"
    sim = sim_factory(symbols=("BTCUSDT",), speed=60, seed=7, start_ms=START_MS)
    service = Service(service_config(sim, data, **{"symbols": ["BTCUSDT"], "storage.persist_aggtrades": True}))

    async def main() -> None:
        await service.start()
        try:
            series = service.feed.series
            assert series is not None
            await until(lambda: series.written.get("agg_trades", 0) >= 50, timeout=30, what="50 aggTrades")
        finally:
            await service.stop()

    asyncio.run(main())
    assert_trades_equal_truth(data, sim, "BTCUSDT", at_least=50)


def test_a_stalled_kline_stream_is_repaired_exactly_from_the_aggtrades(tmp_path: Path, sim_factory: SimFactory) -> None:
    """WebSocket-only: the kline stream alone stalls for about 3 minutes; the minutes it missed are
    rebuilt from the trades (source ``trades``), equal to the exchange's bars, and the gap closes."""
    data = tmp_path / "data"
    sim = sim_factory(symbols=("BTCUSDT",), speed=60, seed=7, start_ms=START_MS)
    service = Service(service_config(sim, data, **{"symbols": ["BTCUSDT"], "storage.persist_aggtrades": True}))
    gaps: list[tuple[Any, ...]] = []
    service.feed.on_gap(lambda *gap: gaps.append(gap))

    async def main() -> None:
        await service.start()
        try:
            repair = service.trade_repair
            assert repair is not None
            series = service.feed.state.series("BTCUSDT", "1m")
            await until(lambda: len(series.ring) >= 2, what="two live bars")
            await asyncio.to_thread(sim.inject, {"kind": "stall_stream", "stream": "btcusdt@kline_1m", "seconds": 3.0})
            await until(lambda: any(g[1] == "1m" for g in gaps), timeout=20, what="the 1m gap")
            await until(lambda: repair.repaired_gaps >= 1, timeout=20, what="the repair")
            await until(lambda: not [g for g in service.quality.db.open_gaps("BTCUSDT") if g[1] == "1m"],
                        timeout=10, what="the gap record closed")
        finally:
            await service.stop()

    asyncio.run(main())
    minute_gaps = [g for g in gaps if g[1] == "1m"]  # one, or more if the stall's end splits it under load
    assert max(g[3] - g[2] for g in minute_gaps) >= MINUTE_MS, "the stall cost more than one minute"
    truth = {row[0]: row for row in sim.truth("BTCUSDT", "1m")}
    rows = []
    for gap in minute_gaps:
        stored = read_bars(data, "BTCUSDT", "1m", gap[2], gap[3] + MINUTE_MS)
        assert stored.height == (gap[3] - gap[2]) // MINUTE_MS + 1
        rows += stored.iter_rows(named=True)
    for row in rows:
        t = int(row["open_time"].timestamp() * 1000)
        want = [float(v) for v in truth[t][1:6]] + [float(truth[t][7]), int(truth[t][8]), float(truth[t][9]), float(truth[t][10])]
        got = [row[k] for k in ("open", "high", "low", "close", "volume", "quote_volume", "trades", "taker_buy_volume",
                                "taker_buy_quote_volume")]
        assert (got, row["source"]) == (want, "trades"), t


def test_klinestore_compact_merges_a_stopped_services_trade_files(tmp_path: Path) -> None:
    from klinestore.storage.maintenance import compact_all

    store = TradeStore(tmp_path, StorageConfig())
    store.open()
    for i in range(1, 5):
        store.append([trade(i, START_MS + i)])
        store.flush()
    store.append([trade(9, START_MS + DAY)])  # the next day: 2024-05-01 is over
    store.close()
    day = tmp_path / "agg_trades" / "day=2024-05-01"
    assert len(list(day.glob("*.parquet"))) == 4
    report, busy = compact_all(tmp_path, StorageConfig())
    assert busy == [] and len(list(day.glob("*.parquet"))) == 1
    assert read_agg_trades(tmp_path, "BTCUSDT")["agg_trade_id"].to_list() == [1, 2, 3, 4, 9]


def test_klinestore_compact_merges_imported_trade_files(tmp_path: Path) -> None:
    """Two imports of one day's aggTrades leave two files of the importer; compaction makes one."""
    from klinestore.storage.maintenance import compact_all
    from klinestore.storage.series_import import import_trade_archives

    data = tmp_path / "data"
    for n, ids in enumerate(((1, 2, 3), (3, 4, 5))):  # trade 3 in both: kept once
        folder = tmp_path / f"archive{n}"
        folder.mkdir()
        rows = "".join(f"{i},100.{i},0.{i},{10 * i},{10 * i + 1},{START_MS + i},{'true' if i % 2 else 'false'}\n"
                       for i in ids)
        (folder / "BTCUSDT-aggTrades-2024-05-01.csv").write_text(rows)
        assert import_trade_archives([folder / "BTCUSDT-aggTrades-2024-05-01.csv"], data) == 3
    day = data / "agg_trades" / "day=2024-05-01"
    assert len(list(day.glob("*.parquet"))) == 2
    report, busy = compact_all(data, StorageConfig())
    assert busy == [] and len(list(day.glob("*.parquet"))) == 1
    stored = read_agg_trades(data, "BTCUSDT")
    assert stored["agg_trade_id"].to_list() == [1, 2, 3, 4, 5] and stored["price"].to_list()[2] == 100.3
