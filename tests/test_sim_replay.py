"""Replay: Binance archives become the market; bars and aggregation reproduce the archives."""

from __future__ import annotations

import asyncio
import csv
import io
import zipfile
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from klinestore.sim import ReplayError, SimConfig, Simulator
from simfixtures import SimFactory, frames

JAN1 = 1_672_531_200_000  # 2023-01-01T00:00Z
DAY = 86_400_000
pytestmark = pytest.mark.real_data


def archive_rows(root: Path) -> list[list[str]]:
    rows = []
    for path in sorted(root.glob("BTCUSDT-1m-*.zip")):
        with zipfile.ZipFile(path) as z:
            rows += list(csv.reader(io.StringIO(z.read(z.namelist()[0]).decode())))
    return rows


def as_rest(row: list[str]) -> list[int | str]:
    return [int(row[0]), *row[1:6], int(row[6]), row[7], int(row[8]), row[9], row[10], "0"]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.fixture
def minutes_dir(shared_data: Path) -> Path:
    return shared_data / "spot" / "klines" / "BTCUSDT" / "1m"


def test_replayed_1m_bars_and_1h_aggregation_equal_the_archives(minutes_dir: Path, shared_data: Path) -> None:
    sim = Simulator(SimConfig(replay_dir=str(minutes_dir), symbols=("BTCUSDT",), start_ms=JAN1 + 7 * DAY, speed=1))
    assert sim.truth("BTCUSDT", "1m") == [as_rest(r) for r in archive_rows(minutes_dir)]
    with open(shared_data / "spot" / "klines" / "BTCUSDT" / "1h" / "BTCUSDT-1h-2023-01.csv") as f:
        hours = [as_rest(r) for r in list(csv.reader(f))[1:] if int(r[0]) < JAN1 + 7 * DAY]
    assert len(hours) == 168
    assert sim.truth("BTCUSDT", "1h") == hours  # every column, to the last decimal


def test_replay_streams_the_archive(minutes_dir: Path, sim_factory: SimFactory) -> None:
    sim = sim_factory(replay_dir=str(minutes_dir), symbols=("BTCUSDT",), start_ms=JAN1 + 2 * DAY, speed=300)

    async def main() -> list:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream?streams=btcusdt@kline_1m/btcusdt@aggTrade") as ws:
            return await frames(ws, 2.0)

    got = run(main())
    rows = {int(r[0]): as_rest(r) for r in archive_rows(minutes_dir)}
    closed = [m["data"]["k"] for m in got if m["stream"].endswith("kline_1m") and m["data"]["k"]["x"]]
    assert len(closed) >= 6
    trades = [m["data"] for m in got if m["stream"].endswith("aggTrade")]
    checked = 0
    for k in closed:
        assert [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"], "0"] == rows[k["t"]]
        mine = [t for t in trades if k["t"] <= t["T"] <= k["T"]]
        whole = mine and mine[0]["T"] == k["t"] and trades[-1]["T"] > k["T"]  # streams are not ordered
        if whole:  # a minute streamed whole: its trades rebuild the row
            assert sum(t["l"] - t["f"] + 1 for t in mine) == k["n"]
            assert sum(int(t["q"].replace(".", "")) for t in mine) == int(k["v"].replace(".", ""))
            assert mine[0]["p"] == k["o"] and mine[-1]["p"] == k["c"]
            prices = [float(t["p"]) for t in mine]
            assert (max(prices), min(prices)) == (float(k["h"]), float(k["l"]))
            checked += 1
    assert checked >= 3


def test_replay_reads_csv_with_header_and_microseconds(minutes_dir: Path, tmp_path: Path) -> None:
    rows = archive_rows(minutes_dir)[:1440]
    out = tmp_path / "BTCUSDT-1m-2023-01-01.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
                    "taker_buy_volume", "taker_buy_quote_volume", "ignore"])
        for r in rows:
            w.writerow([int(r[0]) * 1000, *r[1:6], int(r[6]) * 1000 + 999, *r[7:]])
    sim = Simulator(SimConfig(replay_dir=str(tmp_path), symbols=(), start_ms=JAN1 + DAY))
    assert sim.symbols == ("BTCUSDT",)
    assert sim.truth("BTCUSDT", "1m") == [as_rest(r) for r in rows]


def test_replay_refuses_what_it_cannot_use(tmp_path: Path, minutes_dir: Path) -> None:
    with pytest.raises(ReplayError, match="no Binance 1m kline archives"):
        Simulator(SimConfig(replay_dir=str(tmp_path), symbols=()))
    with pytest.raises(ReplayError, match="ETHUSDT not in the replay archives"):
        Simulator(SimConfig(replay_dir=str(minutes_dir), symbols=("ETHUSDT",)))
    bad = tmp_path / "BTCUSDT-1m-2023-01-01.zip"
    bad.write_bytes((minutes_dir / bad.name).read_bytes())
    (tmp_path / (bad.name + ".CHECKSUM")).write_text("0" * 64 + "  " + bad.name)
    with pytest.raises(ReplayError, match="sha256"):
        Simulator(SimConfig(replay_dir=str(tmp_path), symbols=()))
