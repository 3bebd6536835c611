"""Storage benchmarks: import, resampling, warm restart, bytes per bar, flush, append.

Each figure is measured beside a baseline from the same run: pandas (read_csv + to_parquet,
resample, read every row) or the plain syscall, on the same synthetic Binance-shaped data.
"""

from __future__ import annotations

import compileall
import io
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from functools import partial
from pathlib import Path

import pandas as pd
import polars as pl

from bench.harness import ROOT, Figure, interleaved, measure, subprocess_env, synthetic_bars
from klinestore.config import StorageConfig
from klinestore.storage import Bar, BarStore, import_archives, load_recent, resample_many
from klinestore.storage.archive import KLINE_CSV_COLUMNS, describe, read_archive
from klinestore.storage.frames import with_version
from klinestore.storage.layout import dataset_root
from klinestore.storage.writer import ZSTD_LEVEL, ZSTD_LEVELS, parquet_writer, row_group_rows, to_arrow

T0 = 1_704_067_200_000
MINUTE = 60_000
AREA = "storage"


def minutes_frame(symbols: int, minutes: int, seed: int = 7, *, t0: int = T0) -> pl.DataFrame:
    """Binance-shaped 1m bars from ``t0`` (see :func:`bench.harness.synthetic_bars`)."""
    return synthetic_bars(symbols, minutes, interval="1m", step_ms=MINUTE, t0=t0, seed=seed, source="ws")


def write_archives(directory: Path, symbols: int, days: int, *, monthly: bool) -> tuple[list[Path], int]:
    """One zip per symbol and day (``monthly=False``) or per symbol (a monthly archive)."""
    frame = minutes_frame(symbols, days * 1440)
    paths = []
    columns = ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "trades",
               "taker_buy_volume", "taker_buy_quote_volume"]
    for (symbol,), part in frame.partition_by("symbol", as_dict=True).items():
        chunks = [(f"{symbol}-1m-2024-01", part)] if monthly else [
            (f"{symbol}-1m-2024-01-{day + 1:02d}", part.slice(day * 1440, 1440)) for day in range(days)]
        for name, rows in chunks:
            path = directory / f"{name}.zip"
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
                text = rows.select(*columns, pl.lit(0).alias("ignore")).write_csv(include_header=False)
                archive.writestr(f"{name}.csv", text)
            paths.append(path)
    return paths, frame.height


def bench_import(work: Path, quick: bool, *, monthly: bool) -> list[Figure]:
    src = work / f"archives-{monthly}"
    src.mkdir()
    paths, rows = write_archives(src, 4 if quick else 20, 10 if quick else 31, monthly=monthly)
    runs = 1 if quick else 3  # best of 3, each into an empty directory, turn about with the baseline

    def pandas_baseline(out: Path) -> None:
        out.mkdir()
        for path in paths:
            frame = pd.read_csv(path, header=None, names=list(KLINE_CSV_COLUMNS))
            frame.to_parquet(out / (path.stem + ".parquet"), compression="zstd")

    seconds, base, report = float("inf"), float("inf"), None
    for run in range(runs):
        target = work / f"imported-{monthly}-{run}"
        took, report = measure(partial(import_archives, [src], target, StorageConfig()))
        seconds = min(seconds, took)
        base = min(base, measure(partial(pandas_baseline, work / f"pandas-{monthly}-{run}"))[0])
    kind = "monthly" if monthly else "daily"
    figures = [Figure(AREA, f"import {len(paths)} {kind} 1m archives (validate, store, resample x4)", rows / seconds,
                      "bars/s", rows / base, "pandas read_csv + to_parquet", "higher", ">= 1,000,000 bars/s",
                      {"rows": rows, "files": len(paths), "written": report.written})]
    if monthly:
        stored = sum(p.stat().st_size for p in dataset_root(target).glob("interval=1m/month=*/*.parquet"))
        assert report is not None and report.written == rows
        figures.append(Figure(AREA, "bytes on disk per 1m bar", stored / rows, "B", csv_size(paths) / rows, "CSV",
                              "lower"))
    return figures


def csv_size(paths: list[Path]) -> int:
    """Bytes of the CSV inside each archive."""
    total = 0
    for path in paths:
        with zipfile.ZipFile(path) as archive:
            total += archive.infolist()[0].file_size
    return total


#: Real 1m bars (spot BTCUSDT, 7 daily archives) from the shared data beside the checkout.
REAL_BARS = Path(os.environ.get("KLINESTORE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "spot/klines/BTCUSDT/1m"


def bench_real_bytes(work: Path, quick: bool) -> list[Figure]:
    """Real 1m bars: bytes on disk beside the CSV and pandas' zstd Parquet of the same archives,
    and their encoding with the per-column zstd levels beside level 3 everywhere.

    The synthetic bars above compress in ways real ones do not (a quote volume that is volume x
    price): the levels per column (``storage.writer.ZSTD_LEVELS``) are chosen on these.
    """
    paths = sorted(REAL_BARS.glob("*.zip"))
    if not paths:
        return []
    report = import_archives(paths, work / "real", StorageConfig(), market="spot")
    rows = report.rows
    stored = sum(p.stat().st_size for p in dataset_root(work / "real", "spot").glob("interval=1m/*/*.parquet"))
    frame = pd.concat(pd.read_csv(p, header=None, names=list(KLINE_CSV_COLUMNS)) for p in paths)
    frame.to_parquet(work / "real-pandas.parquet", compression="zstd")
    pandas_bytes = (work / "real-pandas.parquet").stat().st_size
    table = to_arrow(with_version(pl.concat([read_archive(describe(p)) for p in paths]), 1))
    sizes: dict[str, int] = {}

    def encode(name: str, levels: dict[str, int]) -> None:
        sink = io.BytesIO()
        with parquet_writer(sink, levels=levels) as writer:
            writer.write_table(table, row_group_size=row_group_rows("1m"))
        sizes[name] = sink.tell()

    best = interleaved({"per column": lambda: encode("per column", ZSTD_LEVELS),
                        "level 3": lambda: encode("level 3", dict.fromkeys(ZSTD_LEVELS, ZSTD_LEVEL))},
                       rounds=5 if quick else 30)
    return [
        Figure(AREA, f"bytes on disk per real 1m bar ({rows:,} bars of spot BTCUSDT)", stored / rows, "B",
               csv_size(paths) / rows, "CSV", "lower", notes={"pandas_zstd_parquet_B": round(pandas_bytes / rows, 2)}),
        Figure(AREA, "real 1m bars: encode with zstd levels per column", best["per column"] / rows * 1e9, "ns/bar",
               best["level 3"] / rows * 1e9, "zstd level 3 on every column", "lower",
               notes={"B_per_bar": round(sizes["per column"] / rows, 2),
                      "level_3_B_per_bar": round(sizes["level 3"] / rows, 2)}),
    ]


#: The baseline as a whole process: pandas reads each archive and writes it as Parquet.
_PANDAS_PROCESS = """
import json, sys
from pathlib import Path
import pandas as pd
names, out = json.loads(sys.argv[1]), Path(sys.argv[2])
out.mkdir()
for path in sys.argv[3:]:
    pd.read_csv(path, header=None, names=names).to_parquet(out / (Path(path).stem + ".parquet"), compression="zstd")
"""


def byte_compile() -> None:
    """Byte-compile klinestore's packages (``pyproject.toml``'s package-dir), as installing a
    wheel does: the pandas baseline starts from its compiled modules, while an editable install
    on a machine that sets PYTHONDONTWRITEBYTECODE (this one does) would compile every
    klinestore module at each start."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for folder in packages.values():
        compileall.compile_dir(ROOT / folder, quiet=1)


#: Runs a command as its own child and prints that child's peak RSS (KiB). A child forked by
#: the benchmark itself would report the benchmark's RSS (Linux carries the forking process's
#: high-water mark through exec); one forked by this small process starts from a small one.
_PEAK_RSS = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_mb(argv: list[str]) -> float:
    """Peak resident memory of ``argv`` run to its end, in MB."""
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, *argv], check=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=ROOT)
    return int(done.stderr.split()[-1]) / 1024


def bench_import_process(work: Path, quick: bool) -> list[Figure]:
    """``klinestore import`` as a whole process (start-up, validation, resampling x4, publish,
    compaction) against a pandas process converting the same archives, interleaved, same tries."""
    byte_compile()
    src = work / "archives-process"
    src.mkdir()
    paths, rows = write_archives(src, 8 if quick else 60, 31, monthly=True)
    runs = itertools.count()
    script = Path(sys.executable).with_name("klinestore")
    ours = [str(script)] if script.exists() else [sys.executable, "-c", "from klinestore.cli import main; main()"]

    commands = {
        "klinestore": lambda: [*ours, "-q", "import", "--data-dir", str(work / f"process-{next(runs)}"), str(src)],
        "pandas": lambda: [sys.executable, "-c", _PANDAS_PROCESS, json.dumps(list(KLINE_CSV_COLUMNS)),
                           str(work / f"pandas-process-{next(runs)}"), *map(str, paths)],
    }

    def run(argv: list[str]) -> None:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=subprocess_env(), cwd=ROOT)

    best = interleaved({name: lambda argv=argv: run(argv()) for name, argv in commands.items()},
                       rounds=1 if quick else 3)
    peak_mb = {name: peak_rss_mb(argv()) for name, argv in commands.items()}  # one more, untimed run each
    what = f"{len(paths)} monthly 1m archives, {rows:,} bars"
    return [Figure(AREA, f"klinestore import as a process: {what} (validate, store, resample x4)",
                   rows / best["klinestore"], "bars/s", rows / best["pandas"],
                   "pandas read_csv + to_parquet, one process", "higher", ">= 1,000,000 bars/s and >= 1.5x",
                   {"rows": rows, "files": len(paths), "seconds": round(best["klinestore"], 2),
                    "baseline_seconds": round(best["pandas"], 2)}),
            Figure(AREA, f"peak RSS of that import process ({what})", peak_mb["klinestore"], "MB",
                   peak_mb["pandas"], "pandas process, one file at a time", "lower")]


def bench_resample(quick: bool) -> list[Figure]:
    """klinestore's resampling vs three baselines, interleaved with equal tries.

    The baselines compute plain first/max/min/last/sum per (symbol, bucket): no exact
    decimal sums, no empty-minute rule, no completeness flag, so they do less than
    klinestore (whose output is bit-exact with the exchange's own bars).
    """
    frame = minutes_frame(50 if quick else 200, 4000)
    intervals = ("5m", "15m", "1h", "4h")
    pdf = frame.to_pandas().set_index(pd.to_datetime(frame["open_time"].to_numpy(), unit="ms", utc=True))
    rules = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum", "quote_volume": "sum",
             "trades": "sum", "taker_buy_volume": "sum", "taker_buy_quote_volume": "sum", "close_time": "last"}
    freq = {"5m": "5min", "15m": "15min", "1h": "1h", "4h": "4h"}
    plain = pdf.reset_index(drop=True)
    minutes = {"5m": 5, "15m": 15, "1h": 60, "4h": 240}

    def pandas_buckets() -> None:  # frame sorted by (symbol, open_time): "first"/"last" are in time order
        for i in intervals:
            span = minutes[i] * MINUTE
            plain.groupby(["symbol", plain["open_time"] // span * span], sort=False).agg(rules)

    aggs = [pl.col("open").first(), pl.col("high").max(), pl.col("low").min(), pl.col("close").last(),
            *(pl.col(c).sum() for c in ("volume", "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume")),
            pl.col("close_time").last()]

    def polars_group_by() -> None:
        for i in intervals:
            span = minutes[i] * MINUTE
            frame.group_by("symbol", (pl.col("open_time") // span * span).alias("bucket"), maintain_order=True).agg(aggs)

    best = interleaved({
        "klinestore": lambda: resample_many(frame, intervals),
        "pandas groupby().resample()": lambda: [pdf.groupby("symbol").resample(freq[i]).agg(rules) for i in intervals],
        "pandas groupby on time buckets": pandas_buckets,
        "Polars group_by on time buckets": polars_group_by,
    }, rounds=2 if quick else 3)
    mine = best.pop("klinestore")
    name = f"resample {frame.height:,} 1m bars to 5m/15m/1h/4h"
    return [Figure(AREA, name, mine * 1000, "ms", seconds * 1000, baseline + " (plain aggregates)", "lower",
                   "<= 100 ms, >= 10x" if baseline.endswith("resample()") else "")
            for baseline, seconds in best.items()]


def bars_of(frame: pl.DataFrame) -> list[Bar]:
    return [Bar(**row) for row in frame.select(Bar.__struct_fields__).iter_rows(named=True)]


def bench_store(work: Path, quick: bool) -> list[Figure]:
    symbols = 50 if quick else 200
    data = work / "store"
    config = StorageConfig(wal_fsync_window=1.0, resample_intervals=("5m", "15m", "1h", "4h"))
    history = minutes_frame(symbols, 4000)
    store = BarStore(data, config)
    store.open()
    bars = bars_of(history)
    cut = len(bars) - symbols * 30 - 3000  # 3 flushes of 1000 bars, then the last 30 minutes stay in the WAL
    ordered = sorted(bars, key=lambda b: b.open_time)
    for start in range(0, cut, 20_000):
        store.append(ordered[start:min(start + 20_000, cut)])
        store.flush()
    store.compact()
    table = history.head(1000).to_arrow()
    write_table = __import__("pyarrow.parquet").parquet.write_table
    flushes, plain_flushes = [], []  # 3 flushes of 1000 bars, each followed by its baseline
    for start in range(cut, cut + 3000, 1000):
        store.append(ordered[start:start + 1000])
        flushes.append(store.flush().seconds)
        plain_flushes.append(measure(lambda: write_table(table, work / "t.parquet"))[0])
    per_bar = ordered[cut + 3000:]
    line = b"x" * 120
    appended, plain = 0.0, 0.0  # in 10 turns each, taking turns with the baseline
    with open(work / "plain.log", "wb", buffering=0) as handle:
        for turn in range(10):
            chunk = per_bar[turn * len(per_bar) // 10:(turn + 1) * len(per_bar) // 10]
            started = time.perf_counter()
            for b in chunk:
                store.append([b])
            appended += time.perf_counter() - started
            started = time.perf_counter()
            for _ in chunk:
                handle.write(line)
            plain += time.perf_counter() - started
    append_us, plain_us = appended / len(per_bar) * 1e6, plain / len(per_bar) * 1e6
    store._wal.sync()
    names = [f"S{i:03d}USDT" for i in range(symbols)]
    first, loaded = measure(lambda: load_recent(data, names, {"1m": 4000}))
    assert sum(f.height for f in loaded.values()) == symbols * 4000

    def pandas_restart() -> None:
        frame = pd.concat(pd.read_parquet(p) for p in dataset_root(data).glob("interval=1m/month=*/*.parquet"))
        frame.sort_values(["symbol", "open_time"]).groupby("symbol").tail(4000)

    best = interleaved({"ours": lambda: load_recent(data, names, {"1m": 4000}), "pandas": pandas_restart}, rounds=3)
    restart, base_restart = best["ours"], best["pandas"]
    base_flush = min(plain_flushes)
    store.close()
    return [
        Figure(AREA, f"warm restart: {symbols} x 4000 1m bars (Parquet + WAL)", restart, "s", base_restart,
               "pandas read every row (same tries, interleaved)", "lower", "<= 2 s", {"first_call_s": first}),
        Figure(AREA, "flush 1000 bars (+ resample, fsync, publish)", min(flushes) * 1000, "ms", base_flush * 1000,
               "pyarrow write_table, no fsync", "lower", notes={"flushes_ms": [round(f * 1000, 1) for f in flushes]}),
        Figure(AREA, "append one bar (WAL write, group commit)", append_us, "us", plain_us,
               "unbuffered file.write", "lower", "event-loop cheap"),
    ]


def run(quick: bool) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="klinestore-bench-") as tmp:
        work = Path(tmp)
        figures = bench_resample(quick)
        figures += bench_import(work, quick, monthly=True)
        figures += bench_import(work, quick, monthly=False)
        figures += bench_real_bytes(work, quick)
        figures += bench_import_process(work, quick)
        figures += bench_store(work, quick)
    os.sync()
    return figures


if __name__ == "__main__":  # python -m bench.bench_storage [--quick]: the import process alone
    with tempfile.TemporaryDirectory(prefix="klinestore-bench-") as tmp:
        found = bench_import_process(Path(tmp), "--quick" in sys.argv)
    print(json.dumps([f.to_dict() for f in found], indent=1))
