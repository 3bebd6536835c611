"""Disk cost of one symbol-day of aggTrades in the agg_trades dataset (simulated market).

Run: ``python -m bench.aggtrades_disk``.

A size, not a speed, so it is a plain script rather than a ``bench_*`` module with a baseline ratio.
"""
import tempfile
from pathlib import Path

from klinestore.config import StorageConfig
from klinestore.sim import SimThread
from klinestore.storage import AggTrade, TradeStore

DAY = 86_400_000
START = 1_714_521_600_000  # 2024-05-01
sim = SimThread(symbols=("BTCUSDT",), speed=1, seed=7, start_ms=START + DAY, history_minutes=1440).start()
try:
    raw = sim.truth_of("BTCUSDT", "aggTrades")
finally:
    sim.stop()
rows = [AggTrade("BTCUSDT", t["a"], float(t["p"]), float(t["q"]), t["f"], t["l"], t["T"], t["m"]) for t in raw
        if START <= t["T"] < START + DAY]
with tempfile.TemporaryDirectory() as tmp:
    store = TradeStore(Path(tmp), StorageConfig(compaction_grace=0))
    store.open()
    for i in range(0, len(rows), 500):  # as the live service: many small flushes...
        store.append(rows[i:i + 500])
        if i % 5000 == 0:
            store.flush()
    store.flush()
    store.compact()  # ...merged into one file for the closed day
    store.close()
    files = list((Path(tmp) / "agg_trades" / "day=2024-05-01").glob("*.parquet"))
    size = sum(f.stat().st_size for f in files)
csv_bytes = sum(len(f"{t['a']},{t['p']},{t['q']},{t['f']},{t['l']},{t['T']},{str(t['m']).lower()}\n")
                for t in raw if START <= t["T"] < START + DAY)
print(f"trades in the day: {len(rows)}; files: {len(files)}; parquet bytes: {size} ({size / len(rows):.2f} B/trade); "
      f"archive CSV bytes: {csv_bytes} ({csv_bytes / len(rows):.1f} B/trade)")
