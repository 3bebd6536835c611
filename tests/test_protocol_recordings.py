"""The wire protocol decodes every frame of real Binance USD-M recordings."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest

from klinestore.ingest.protocol import (
    AggTradeEvent,
    BookTickerEvent,
    DepthUpdateEvent,
    KlineEvent,
    TradeEvent,
    decode_depth_snapshot,
    decode_exchange_info,
    decode_frame,
    parse_stream,
)

pytestmark = pytest.mark.real_data


def cryptofeed_frames(shared_data: Path) -> list[str]:
    lines = (shared_data / "um/ws/cryptofeed-usdm-2021-07-22.ws.txt").read_text().splitlines()
    assert lines[0].startswith("wss://fstream.binance.com/stream?streams=")
    return [line.partition(": ")[2] for line in lines[1:]]


def test_every_cryptofeed_frame_decodes_to_its_stream(shared_data: Path) -> None:
    kinds: Counter[str] = Counter()
    for raw in cryptofeed_frames(shared_data):
        frame = decode_frame(raw)
        assert frame.stream is not None and frame.data is not None
        stream = parse_stream(frame.stream)
        assert stream.symbol == frame.data.symbol
        kinds[type(frame.data).__name__] += 1
    assert kinds == {"DepthUpdateEvent": 764, "BookTickerEvent": 613, "AggTradeEvent": 91, "KlineEvent": 67}


def test_closed_klines_carry_binance_values(shared_data: Path) -> None:
    closed = [
        f.data for f in map(decode_frame, cryptofeed_frames(shared_data))
        if isinstance(f.data, KlineEvent) and f.data.k.x
    ]
    sushi = next(e for e in closed if e.s == "SUSHIUSDT")
    k = sushi.k
    assert (k.t, k.T, k.i) == (1626992700000, 1626992759999, "1m")
    assert (k.o, k.h, k.l, k.c) == (7.608, 7.618, 7.607, 7.617)
    assert (k.v, k.n, k.q, k.V, k.Q) == (3005.0, 113, 22875.859, 1900.0, 14464.696)
    assert k.T == k.t + 60_000 - 1
    assert {e.s for e in closed} == {"SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"}


def test_every_hftbacktest_frame_and_its_snapshot_decode(shared_data: Path) -> None:
    kinds: Counter[type] = Counter()
    snapshots = []
    with gzip.open(shared_data / "um/ws/hftbacktest-btcusdt-20240808.txt.gz", "rt") as fh:
        for line in fh:
            raw = line.partition(" ")[2]
            if '"stream"' in raw:
                frame = decode_frame(raw)
                kinds[type(frame.data)] += 1
            else:
                snapshots.append(decode_depth_snapshot(raw))
    assert kinds[DepthUpdateEvent] == 6551
    assert kinds[TradeEvent] == 21313
    assert kinds[BookTickerEvent] == 66089
    assert len(snapshots) == 1 and snapshots[0].lastUpdateId == 5123107852948
    assert snapshots[0].bids[0] == (61800.2, 2.909)


def test_depth_updates_chain_by_pu(shared_data: Path) -> None:
    previous = None
    for raw in cryptofeed_frames(shared_data):
        frame = decode_frame(raw)
        if isinstance(frame.data, DepthUpdateEvent) and frame.data.s == "SUSHIUSDT":
            if previous is not None:
                assert frame.data.pu == previous.u
            assert frame.data.U <= frame.data.u
            previous = frame.data
    assert previous is not None


def test_recorded_rest_bodies_decode(shared_data: Path) -> None:
    text = (shared_data / "um/rest/cryptofeed-usdm-2021-07-22.depth-snapshots.txt").read_text()
    snaps = [decode_depth_snapshot(line.partition(": ")[2]) for line in text.splitlines() if line.strip()]
    assert len(snaps) == 4
    assert all(len(s.bids) > 0 and len(s.asks) > 0 and s.lastUpdateId > 0 for s in snaps)
    assert all(s.bids[0][0] < s.asks[0][0] for s in snaps)
    info_line = (shared_data / "um/rest/cryptofeed-usdm-2021-07-22.exchangeinfo.txt").read_text().splitlines()[0]
    info = decode_exchange_info(info_line.partition(": ")[2])
    assert info.request_weight_limit() == 2400
    btc = next(s for s in info.symbols if s.symbol == "BTCUSDT")
    assert (btc.status, btc.contractType, btc.onboardDate) == ("TRADING", "PERPETUAL", 1569398400000)
    assert len(info.symbols) > 100


def test_agg_trades_decode_with_taker_side(shared_data: Path) -> None:
    trades = [
        f.data for f in map(decode_frame, cryptofeed_frames(shared_data)) if isinstance(f.data, AggTradeEvent)
    ]
    first = next(t for t in trades if t.a == 16599292)
    assert (first.s, first.p, first.q, first.f, first.l, first.m) == ("CTKUSDT", 1.011, 10.0, 23961322, 23961322, False)
