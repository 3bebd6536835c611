"""Datasets for the queries tests, written through the real storage writer (BarStore)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from klinestore.config import StorageConfig
from klinestore.storage import Bar, BarStore

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MINUTE = 60_000
CONFIG = StorageConfig(wal_fsync_window=0.0, compaction_grace=0.0)


def minute_bars(symbol: str, minutes: int, *, t0: int = T0, skip: Iterable[int] = (), seed: int = 1) -> list[Bar]:
    """Binance-shaped 1m bars (2-decimal prices, 3-decimal volumes, some empty minutes)."""
    rng = np.random.default_rng(seed)
    prices = np.round(30_000 + np.cumsum(rng.normal(0, 5, minutes)), 2)
    volumes = np.round(rng.random(minutes) * 40, 3)
    volumes[rng.random(minutes) < 0.02] = 0.0
    skipped = set(skip)
    out = []
    for i in range(minutes):
        if i in skipped:
            continue
        open_time = t0 + i * MINUTE
        price, volume = float(prices[i]), float(volumes[i])
        previous = float(prices[i - 1]) if i else price
        if volume == 0.0:
            o = h = low = c = previous
            trades, quote, taker, taker_quote = 0, 0.0, 0.0, 0.0
        else:
            o, c = previous, price
            h = round(max(o, c) + float(rng.random()) * 3, 2)
            low = round(min(o, c) - float(rng.random()) * 3, 2)
            trades = int(rng.integers(1, 900))
            quote = round(volume * price, 5)
            taker = round(volume * 0.5, 3)
            taker_quote = round(taker * price, 5)
        out.append(Bar(symbol, "1m", open_time, open_time + MINUTE - 1, o, h, low, c, volume, quote, trades, taker,
                       taker_quote, source="ws"))
    return out


def build_dataset(
    data_dir: Path, symbols: Iterable[str] = ("BTCUSDT",), minutes: int = 1440, *, skip: Iterable[int] = (),
    t0: int = T0,
) -> Path:
    """Store ``minutes`` 1m bars per symbol from ``t0`` (minus ``skip``), resampled like the service."""
    store = BarStore(data_dir, CONFIG)
    store.open()
    try:
        for n, symbol in enumerate(symbols):
            store.append(minute_bars(symbol, minutes, t0=t0, skip=skip, seed=n + 1))
        store.flush()
    finally:
        store.close()
    return data_dir
