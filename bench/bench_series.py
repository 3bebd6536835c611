"""The hot-path cost of keeping the futures series: markPrice@1s and aggTrade frames dispatched
with the series on (mark/index bars and funding built, every aggTrade written to its WAL:
``storage.persist_aggtrades``) against the same frames with the series off, interleaved."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from bench.harness import Figure
from klinestore.config import Config, StorageConfig
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.dispatcher import Dispatcher
from klinestore.ingest.markbars import MarkSeriesOut
from klinestore.ingest.sink import MemorySink
from klinestore.ingest.state import MarketState
from klinestore.storage import SeriesStores

T0 = 1_704_067_200_000


def frames(n: int) -> list[bytes]:
    """``n`` seconds of one symbol: a markPrice@1s update and two aggTrades a second."""
    out = []
    for s in range(n):
        t = T0 + s * 1000
        mark = {"e": "markPriceUpdate", "E": t, "s": "BTCUSDT", "p": f"{42000 + s % 97}.5", "i": f"{42000 + s % 89}.25",
                "P": "42000.1", "r": "0.00010000", "T": (t // 28_800_000 + 1) * 28_800_000}
        out.append(json.dumps({"stream": "btcusdt@markPrice@1s", "data": mark}).encode())
        for k in range(2):
            a = 2 * s + k
            trade = {"e": "aggTrade", "E": t + 10 * k, "s": "BTCUSDT", "a": a, "p": f"{42000 + a % 31}.1", "q": "0.015",
                     "f": 3 * a, "l": 3 * a + 2, "T": t + 10 * k, "m": a % 2 == 0}
            out.append(json.dumps({"stream": "btcusdt@aggTrade", "data": trade}).encode())
    return out


def dispatcher(series: MarkSeriesOut | None) -> Dispatcher:
    clock = ExchangeClock()
    state = MarketState(Config().websocket.cache, clock, on_gap=lambda gap: None)
    d = Dispatcher(state, MemorySink(), clock, series=series)
    d.route("btcusdt@markPrice@1s")
    d.route("btcusdt@aggTrade")
    return d


def per_frame(d: Dispatcher, raw: list[bytes]) -> float:
    started = time.perf_counter()
    for i, frame in enumerate(raw):
        d.dispatch(frame, float(i))
    return (time.perf_counter() - started) / len(raw)


def run(quick: bool) -> list[Figure]:
    raw = frames(600 if quick else 3600)
    times: dict[str, list[float]] = {"off": [], "mark": [], "trades": []}
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        marks = SeriesStores(Path(a), StorageConfig(wal_fsync_window=1.0))
        trades = SeriesStores(Path(b), StorageConfig(persist_aggtrades=True, wal_fsync_window=1.0))
        marks.open()
        trades.open()
        try:
            for _ in range(3):  # interleaved: each round runs every variant on fresh state
                times["off"].append(per_frame(dispatcher(None), raw))
                times["mark"].append(per_frame(dispatcher(MarkSeriesOut(marks.sinks)), raw))
                times["trades"].append(per_frame(dispatcher(MarkSeriesOut(trades.sinks)), raw))
                marks.flush()
                trades.flush()
        finally:
            marks.close()
            trades.close()
    off = min(times["off"]) * 1e6
    notes = {"frames": len(raw), "rounds": 3}
    return [
        Figure("series", "dispatch a markPrice@1s / aggTrade frame, mark/index bars and funding kept",
               min(times["mark"]) * 1e6, "us/frame", baseline=off, baseline_name="same frames, series off",
               better="lower", notes=notes),
        Figure("series", "the same, every aggTrade also kept (storage.persist_aggtrades: a WAL write each)",
               min(times["trades"]) * 1e6, "us/frame", baseline=off, baseline_name="same frames, series off",
               better="lower", notes=notes),
    ]
