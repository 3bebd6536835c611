"""klinestore against nautilus_trader's ParquetDataCatalog, written and queried with the same bars.

nautilus_trader 1.221.0 needs pandas < 3 and the project pins pandas 3.1.1, so it cannot be an
extra of this project: it lives in its own virtual environment, outside the repository
(``~/.cache/klinestore-bench/``, or under ``XDG_CACHE_HOME``; created on the first run with ``pip install nautilus_trader==NAUTILUS``), and its side runs in a child
process that times itself. Without it (no network, pip refused) the figures are skipped with
the reason.

The bars: one symbol, a year of 1m bars (527 040), prices with one decimal (the precision of
nautilus' BTCUSDT-PERP test instrument, so both store the same values). Write: klinestore's
writer and publish (one file a month, fsynced, atomic) against ``catalog.write_data`` of the
nautilus ``Bar`` objects (built beforehand, untimed: the conversion is not charged to it).
Query: ten days of the symbol, klinestore's ``Dataset.read`` against ``catalog.bars``. Rounds
alternate between the two, the same number each, best of each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from bench.bench_queries import OUT
from bench.harness import Figure
from klinestore.storage import Dataset
from klinestore.storage.frames import version_expr
from klinestore.storage.layout import IMPORT_WRITER, Stamper, dataset_root
from klinestore.storage.txn import Publish
from klinestore.storage.writer import write_partitions

AREA = "nautilus"
NAUTILUS = "1.221.0"
T0 = 1_704_067_200_000  # 2024-01-01
MINUTE = 60_000
DAY = 86_400_000
SYMBOL = "BTCUSDT"

_CHILD = """
import json, sys, time, tempfile, shutil
import pandas as pd
from nautilus_trader.persistence.catalog import ParquetDataCatalog
from nautilus_trader.persistence.wranglers import BarDataWrangler
from nautilus_trader.model.data import BarType
from nautilus_trader.test_kit.providers import TestInstrumentProvider
frame = pd.read_parquet(sys.argv[1]).set_index("timestamp")
work, start, end = sys.argv[2], pd.Timestamp(int(sys.argv[3]), unit="ms", tz="UTC"), pd.Timestamp(int(sys.argv[4]), unit="ms", tz="UTC")
instrument = TestInstrumentProvider.btcusdt_perp_binance()
bar_type = BarType.from_str(f"{instrument.id}-1-MINUTE-LAST-EXTERNAL")
bars = BarDataWrangler(bar_type, instrument).process(frame)
shutil.rmtree(work, ignore_errors=True)
catalog = ParquetDataCatalog(work)
t = time.perf_counter(); catalog.write_data(bars); write = time.perf_counter() - t
catalog.bars([str(bar_type)], start=start, end=end)  # first query: opens the catalog
query = float("inf")
for _ in range(5):
    t = time.perf_counter(); rows = len(catalog.bars([str(bar_type)], start=start, end=end)); query = min(query, time.perf_counter() - t)
print(json.dumps({"write": write, "query": query, "rows": rows, "written": len(bars)}))
"""


def _bars(minutes: int) -> pl.DataFrame:
    rng = np.random.default_rng(11)
    opens = T0 + np.arange(minutes, dtype=np.int64) * MINUTE
    price = np.round(40_000 + np.cumsum(rng.normal(0, 5, minutes)), 1)
    volume = np.round(rng.random(minutes) * 5, 3)
    return pl.DataFrame({
        "symbol": SYMBOL, "interval": "1m", "open_time": opens, "close_time": opens + MINUTE - 1, "open": price,
        "high": np.round(price + 1, 1), "low": np.round(price - 1, 1), "close": price, "volume": volume,
        "quote_volume": np.round(volume * price, 5), "trades": rng.integers(1, 500, minutes),
        "taker_buy_volume": np.round(volume / 2, 3), "taker_buy_quote_volume": np.round(volume * price / 2, 5),
        "is_complete": True, "source": "import",
    })


def _venv() -> tuple[Path | None, str]:
    """The nautilus environment's python, or None and why not."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = cache / "klinestore-bench" / f"nautilus-{NAUTILUS}-venv"
    python = root / "bin" / "python"
    if (root / ".complete").exists():
        return python, ""
    shutil.rmtree(root, ignore_errors=True)
    steps = ([sys.executable, "-m", "venv", str(root)],
             [str(python), "-m", "pip", "install", "-q", f"nautilus_trader=={NAUTILUS}"])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if done.returncode:
            return None, f"cannot install nautilus_trader=={NAUTILUS}: {(done.stderr or done.stdout).strip()[-300:]}"
    (root / ".complete").touch()
    return python, ""


def _write_ours(frame: pl.DataFrame, data_dir: Path) -> None:
    shutil.rmtree(data_dir, ignore_errors=True)
    stamper = Stamper(IMPORT_WRITER)
    publish = Publish(data_dir, IMPORT_WRITER, stamper)
    write_partitions(publish, dataset_root(data_dir), frame.with_columns(version_expr(stamper.next())))
    publish.commit()


def run(quick: bool) -> list[Figure]:
    python, why = _venv()
    if python is None:
        print(f"bench_nautilus skipped: {why}")
        return []
    frame = _bars((31 if quick else 366) * 1440)
    work = OUT / "nautilus-work"
    work.mkdir(parents=True, exist_ok=True)
    source = work / "bars.parquet"
    frame.select(pl.from_epoch("open_time", "ms").dt.replace_time_zone("UTC").alias("timestamp"),
                 "open", "high", "low", "close", "volume").write_parquet(source)
    start, end = T0 + 10 * DAY, T0 + 20 * DAY
    data_dir, dataset = work / "klinestore", Dataset(work / "klinestore")
    best = {"write": float("inf"), "query": float("inf"), "theirs_write": float("inf"), "theirs_query": float("inf")}
    rounds = 1 if quick else 3
    for _ in range(rounds):
        began = time.perf_counter()
        _write_ours(frame, data_dir)
        best["write"] = min(best["write"], time.perf_counter() - began)
        dataset.read(SYMBOL, "1m", start, end)
        for _ in range(5):
            began = time.perf_counter()
            rows = dataset.read(SYMBOL, "1m", start, end).height
            best["query"] = min(best["query"], time.perf_counter() - began)
        child = subprocess.run([str(python), "-c", _CHILD, str(source), str(work / "catalog"), str(start), str(end)],
                               capture_output=True, text=True, timeout=900)
        if child.returncode:
            print(f"bench_nautilus skipped: the nautilus side failed: {child.stderr.strip()[-300:]}")
            return []
        theirs = json.loads(child.stdout.strip().splitlines()[-1])
        assert theirs["rows"] in (rows, rows + 1), (theirs, rows)  # nautilus' end bound is inclusive
        best["theirs_write"] = min(best["theirs_write"], theirs["write"])
        best["theirs_query"] = min(best["theirs_query"], theirs["query"])
    notes = {"bars": frame.height, "query_rows": rows, "rounds": rounds, "nautilus_trader": NAUTILUS}
    baseline = f"nautilus_trader {NAUTILUS} ParquetDataCatalog"
    return [
        Figure(AREA, f"write {frame.height:,} 1m bars of one symbol", frame.height / best["write"], "bars/s",
               frame.height / best["theirs_write"], baseline + ".write_data (Bar objects built beforehand)",
               "higher", notes=notes),
        Figure(AREA, f"query ten days of one symbol ({rows:,} 1m bars)", best["query"] * 1000, "ms",
               best["theirs_query"] * 1000, baseline + ".bars", "lower", notes=notes),
    ]
