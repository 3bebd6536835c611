"""klinestore list: first and last bar, count and missing bars per symbol and interval, from the footers where they suffice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from klinestore.cli import main
from klinestore.core.intervals import interval_sort_key
from klinestore.queries import inventory as inv
from klinestore.queries.api import sql
from klinestore.queries.inventory import inventory
from klinestore.storage import BarStore
from queries_support import CONFIG, MINUTE, T0, minute_bars

DAY = 1440


def store_in_flushes(data_dir: Path, batches: list[list]) -> Path:
    """Each batch is one flush (one file per partition), as a live service writes them."""
    store = BarStore(data_dir, CONFIG)
    store.open()
    try:
        for batch in batches:
            store.append(batch)
            store.flush()
    finally:
        store.close()
    return data_dir


def truth(data_dir: Path) -> list[dict[str, object]]:
    """The same inventory from the deduplicating SQL views (every row read)."""
    frame = sql(
        "SELECT symbol, interval, strftime(min(open_time), '%Y-%m-%dT%H:%M:%SZ') AS first, "
        "strftime(max(open_time), '%Y-%m-%dT%H:%M:%SZ') AS last, count(*) AS bars FROM bars GROUP BY ALL",
        data_dir=data_dir,
    )
    return sorted(frame.to_dicts(), key=lambda r: (r["symbol"], interval_sort_key(r["interval"])))


def listed(data_dir: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, object]]:
    assert main(["list", "--data-dir", str(data_dir), "--format", "json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def flushed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two symbols over a month boundary, written in six flushes, BTCUSDT with a 30-minute hole."""
    t0 = T0 - DAY * MINUTE  # 2023-12-31: two month partitions
    btc = minute_bars("BTCUSDT", 2 * DAY, t0=t0, skip=range(600, 630))
    eth = minute_bars("ETHUSDT", 2 * DAY, t0=t0, seed=2)
    batches = [btc[i:i + 480] + eth[i:i + 480] for i in range(0, 2 * DAY, 480)]
    return store_in_flushes(tmp_path_factory.mktemp("inventory") / "data", batches)


def test_counts_match_the_deduplicated_rows_and_come_from_the_footers(
    flushed: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rows(*args: object) -> None:
        raise AssertionError("disjoint flushes need no dedup of their rows")

    monkeypatch.setattr(inv, "_distinct", no_rows)
    rows = listed(flushed, capsys)
    assert [{k: r[k] for k in ("symbol", "interval", "first", "last", "bars")} for r in rows] == truth(flushed)
    missing = {(r["symbol"], r["interval"]): r["missing"] for r in rows}
    assert missing[("BTCUSDT", "1m")] == 30 and missing[("ETHUSDT", "1m")] == 0
    assert missing[("BTCUSDT", "1h")] == 0  # the hole leaves an incomplete 10:00 bar, not an absent one
    btc = next(r for r in rows if (r["symbol"], r["interval"]) == ("BTCUSDT", "1m"))
    assert btc["first"] == "2023-12-31T00:00:00Z" and btc["last"] == "2024-01-01T23:59:00Z" and btc["bars"] == 2850


def test_overlapping_files_are_counted_from_their_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bars = minute_bars("BTCUSDT", 600)
    data_dir = store_in_flushes(tmp_path / "data", [bars[:400], bars[200:], bars[100:150]])  # replays overlap
    rows = listed(data_dir, capsys, "--interval", "1m")
    assert rows == [{"symbol": "BTCUSDT", "interval": "1m", "first": "2024-01-01T00:00:00Z",
                     "last": "2024-01-01T09:59:00Z", "bars": 600, "missing": 0}]
    assert [{k: r[k] for k in ("symbol", "interval", "first", "last", "bars")} for r in listed(data_dir, capsys)] == (
        truth(data_dir))


def test_filters_markets_and_the_table(flushed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = listed(flushed, capsys, "--symbol", "ethusdt", "--interval", "4h")
    assert [(r["symbol"], r["interval"], r["bars"], r["missing"]) for r in rows] == [("ETHUSDT", "4h", 12, 0)]
    assert listed(flushed, capsys, "--market", "spot") == []
    assert main(["list", "--data-dir", str(flushed)]) == 0
    table = capsys.readouterr().out
    assert "BTCUSDT" in table and "2023-12-31T00:00:00Z" in table and "2,850" in table
    for column in ("symbol", "interval", "first", "last", "bars", "missing"):
        assert column in table
    assert main(["list", "--data-dir", str(flushed), "--market", "spot"]) == 0
    assert "nothing stored" in capsys.readouterr().out


def test_spot_archives_are_listed_under_their_market(shared_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    assert main(["import", str(shared_data / "spot/klines/BTCUSDT/1m"), "--market", "spot",
                 "--data-dir", str(data_dir)]) == 0
    capsys.readouterr()
    rows = {r["interval"]: r for r in listed(data_dir, capsys, "--market", "spot")}
    assert rows["1m"] == {"symbol": "BTCUSDT", "interval": "1m", "first": "2023-01-01T00:00:00Z",
                          "last": "2023-01-07T23:59:00Z", "bars": 10_080, "missing": 0}
    assert rows["4h"]["bars"] == 42 and inventory(data_dir) == []


def test_a_file_compacted_away_while_listing_is_listed_again(flushed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = inv._file_spans, []

    def vanishing_once(path: Path, wanted: str | None) -> object:
        calls.append(path)
        if len(calls) == 1:
            raise FileNotFoundError(path)
        return real(path, wanted)

    monkeypatch.setattr(inv, "_file_spans", vanishing_once)
    assert [s.row() for s in inventory(flushed)] == [s.row() for s in inventory(flushed)]
    assert len(inventory(flushed, symbol="BTCUSDT", interval="1m")) == 1
