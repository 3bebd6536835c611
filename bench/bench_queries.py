"""Query and export benchmarks, each beside the freqtrade way of loading the same data.

The dataset: 50 symbols x a year of 1m bars (26.3 M bars) plus their 1h bars, written
through the storage writer as compaction leaves closed partitions (1m: one file a month;
1h, partitioned by year: one file) and cached under ``bench/out/`` between runs. The baseline is freqtrade's
feather layout of the same bars: one file per pair and timeframe, read whole with
``pandas.read_feather`` and then filtered by date in pandas (its data handlers' load path).
The baseline includes freqtrade's own dedup (a group-by on the date) and no gap check;
every klinestore SQL figure includes its dedup, and the exports the gap check.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import polars as pl

from bench.bench_storage import MINUTE, minutes_frame
from bench.harness import Figure, interleaved, measure
from klinestore.queries.export import export
from klinestore.queries.inventory import inventory
from klinestore.queries.sql import connect, execute
from klinestore.storage.frames import version_expr
from klinestore.storage.layout import IMPORT_WRITER, Stamper, dataset_root
from klinestore.storage.resample import resample_many
from klinestore.storage.txn import Publish
from klinestore.storage.writer import write_partitions

AREA = "queries"
OUT = Path(__file__).resolve().parent / "out"
YEAR_START = 1_704_067_200_000  # 2024-01-01
DAY = 1440 * MINUTE


def _months(count: int) -> list[tuple[int, int]]:
    """(start_ms, minutes) of ``count`` calendar months from January 2024."""
    out = []
    for month in range(count):
        start = pd.Timestamp(2024 + month // 12, month % 12 + 1, 1, tz="UTC")
        out.append((int(start.timestamp() * 1000), int(start.days_in_month) * 1440))
    return out


def dataset(symbols: int, months: int) -> tuple[Path, Path]:
    """(data_dir, freqtrade_dir) with the bars, generated once and cached under bench/out/."""
    root = OUT / f"queries-{symbols}x{months}m-v3"
    data_dir, feather_dir = root / "data", root / "freqtrade" / "futures"
    if (root / ".complete").exists():
        return data_dir, feather_dir
    shutil.rmtree(root, ignore_errors=True)
    feather_dir.mkdir(parents=True)
    stamper = Stamper(IMPORT_WRITER)
    per_symbol: dict[str, list[pl.DataFrame]] = {"1m": [], "1h": []}
    hours: list[pl.DataFrame] = []
    for n, (t0, minutes) in enumerate(_months(months)):
        minute_bars = minutes_frame(symbols, minutes, seed=n, t0=t0).with_columns(pl.lit("import").alias("source"))
        hourly = resample_many(minute_bars, ["1h"])["1h"]
        publish = Publish(data_dir, IMPORT_WRITER, stamper)
        write_partitions(publish, dataset_root(data_dir), minute_bars.with_columns(version_expr(stamper.next())))
        publish.commit()
        per_symbol["1m"].append(_feather_columns(minute_bars))
        per_symbol["1h"].append(_feather_columns(hourly))
        hours.append(hourly)
    publish = Publish(data_dir, IMPORT_WRITER, stamper)  # 1h: one file a year, as compaction leaves a closed year
    write_partitions(publish, dataset_root(data_dir), pl.concat(hours).with_columns(version_expr(stamper.next())))
    publish.commit()
    for timeframe, parts in per_symbol.items():
        for (symbol,), frame in pl.concat(parts).partition_by("symbol", as_dict=True).items():
            path = feather_dir / f"{str(symbol)[:-4]}_USDT_USDT-{timeframe}-futures.feather"
            frame.drop("symbol").to_pandas().to_feather(path, compression="lz4", compression_level=9)
    (root / ".complete").touch()
    return data_dir, feather_dir


def _feather_columns(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        "symbol", pl.col("open_time").cast(pl.Datetime("ms", "UTC")).cast(pl.Datetime("ns", "UTC")).alias("date"),
        "open", "high", "low", "close", "volume",
    )


def freqtrade_load(path: Path, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """What freqtrade's feather path does: read the whole file, fix types, drop duplicate
    dates its own way (``clean_ohlcv_dataframe``: group by date, first open, max high, min
    low, last close, max volume), then trim by date."""
    data = pd.read_feather(path)
    data.columns = ["date", "open", "high", "low", "close", "volume"]
    data = data.astype({c: "float" for c in ("open", "high", "low", "close", "volume")})
    data["date"] = pd.to_datetime(data["date"], unit="ms", utc=True)
    data = data.groupby(by="date", as_index=False, sort=True).agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "max"})
    return data.loc[(data["date"] >= start) & (data["date"] < end)]


def run(quick: bool) -> list[Figure]:
    symbols, months = (5, 2) if quick else (50, 12)
    started = time.perf_counter()
    data_dir, feather_dir = dataset(symbols, months)
    setup = time.perf_counter() - started
    con = connect(data_dir)
    figures: list[Figure] = []
    notes = {"symbols": symbols, "months": months, "dataset_setup_s": round(setup, 1),
             "baseline": "freqtrade's dedup (group by date), no gap check; klinestore's SQL dedups every key"}

    # one symbol, a whole period of 1h bars
    symbol, last_day = "S007USDT" if symbols > 7 else "S001USDT", _months(months)[-1][0]
    start_ts, end_ts = pd.Timestamp(YEAR_START, unit="ms", tz="UTC"), pd.Timestamp(last_day, unit="ms", tz="UTC")
    one_symbol = (f"SELECT * FROM bars_1h WHERE symbol = '{symbol}' AND open_time >= '{start_ts.isoformat()}' "
                  f"AND open_time < '{(end_ts + pd.Timedelta(days=31)).isoformat()}'")
    rows = execute(con, one_symbol).read_all().num_rows
    path_1h = feather_dir / f"{symbol[:-4]}_USDT_USDT-1h-futures.feather"
    best = interleaved({
        "sql": lambda: execute(con, one_symbol).read_all(),
        "freqtrade": lambda: freqtrade_load(path_1h, start_ts, end_ts + pd.Timedelta(days=31)),
    }, rounds=7)
    ours, theirs = best["sql"], best["freqtrade"]
    figures.append(Figure(AREA, f"SQL: one symbol, {months} months of 1h bars ({rows:,} rows)", ours * 1000, "ms",
                          theirs * 1000, "freqtrade feather: read file, its dedup, filter", better="lower",
                          notes=notes))

    # every symbol at one day, from a year of 1m bars
    day = pd.Timestamp(last_day, unit="ms", tz="UTC") + pd.Timedelta(days=14)
    cross = (f"SELECT * FROM bars_1m WHERE open_time >= '{day.isoformat()}' "
             f"AND open_time < '{(day + pd.Timedelta(days=1)).isoformat()}'")
    rows = execute(con, cross).read_all().num_rows
    files = sorted(feather_dir.glob("*-1m-futures.feather"))
    best = interleaved({
        "sql": lambda: execute(con, cross).read_all(),
        "freqtrade": lambda: pd.concat([freqtrade_load(f, day, day + pd.Timedelta(days=1)) for f in files]),
    }, rounds=3)
    ours, theirs = best["sql"], best["freqtrade"]
    figures.append(Figure(AREA, f"SQL: all {symbols} symbols at one day of 1m bars ({rows:,} rows)", ours * 1000, "ms",
                          theirs * 1000, f"freqtrade feather: read {len(files)} files, its dedup, filter",
                          better="lower", notes=notes))

    # the inventory (klinestore list) beside the SQL that gives the same rows; tries interleaved
    inventory_sql = ("SELECT symbol, interval, min(open_time), max(open_time), count(*) FROM bars GROUP BY ALL")
    listed = inventory(data_dir)
    ours_runs, sql_runs = [], []
    for _ in range(5):
        ours_runs.append(measure(lambda: inventory(data_dir))[0])
        sql_runs.append(measure(lambda: execute(con, inventory_sql).read_all())[0])
    figures.append(Figure(AREA, f"list: first/last/bars/missing of {len(listed)} series ({sum(s.bars for s in listed):,} "
                                "bars)", min(ours_runs) * 1000, "ms", min(sql_runs) * 1000,
                          "SQL: min/max/count over the deduplicated bars view (same rows)", better="lower", notes=notes))

    # first query of a fresh session (klinestore sql pays this once per command)
    cold, _ = measure(lambda: execute(connect(data_dir), one_symbol).read_all())
    figures.append(Figure(AREA, "SQL: connect (views, lock) + the one-symbol query, cold", cold * 1000, "ms",
                          better="lower", notes=notes))
    con.close()

    # export throughput: one symbol, the whole period of 1m bars, each beside a by-hand write of
    # the same bars (no dedup, no gap check), interleaved, the same number of tries
    work = OUT / "export-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    end_ms = _months(months)[-1][0] + _months(months)[-1][1] * MINUTE
    files_1m = [str(p) for _, p in _partition_files(data_dir, "1m")]

    def ours(fmt: str) -> object:
        out = work / ("ft" if fmt == "freqtrade" else f"x.{fmt}")
        return export(symbol, "1m", YEAR_START, end_ms, fmt, out, data_dir=data_dir, now_ms=end_ms + DAY)

    def by_hand() -> pl.DataFrame:
        return pl.scan_parquet(files_1m, hive_partitioning=False).filter(pl.col("symbol") == symbol).collect()

    rows = ours("parquet").rows
    best = interleaved({
        "freqtrade": lambda: ours("freqtrade"),
        "freqtrade by hand": lambda: _feather_columns(by_hand()).drop("symbol").to_pandas().to_feather(
            work / "raw.feather", compression="lz4"),
        "parquet": lambda: ours("parquet"),
        "parquet by hand": lambda: by_hand().write_parquet(work / "raw.parquet", compression="zstd"),
        "binance": lambda: ours("binance"),
    }, rounds=1 if quick else 3)
    hand = "by hand: Polars scan by symbol + {} (no dedup, no gap check)"
    figures += [
        Figure(AREA, f"export {rows:,} 1m bars to freqtrade feather", rows / best["freqtrade"], "bars/s",
               rows / best["freqtrade by hand"], hand.format("pandas to_feather"), goal=">= 2,000,000 bars/s",
               notes=notes),
        Figure(AREA, f"export {rows:,} 1m bars to parquet", rows / best["parquet"], "bars/s",
               rows / best["parquet by hand"], hand.format("write_parquet"), goal=">= 2,000,000 bars/s", notes=notes),
        Figure(AREA, f"export {rows:,} 1m bars to binance", rows / best["binance"], "bars/s", notes=notes),
    ]
    shutil.rmtree(work, ignore_errors=True)
    return figures


def _partition_files(data_dir: Path, interval: str) -> list[tuple[str, Path]]:
    root = dataset_root(data_dir) / f"interval={interval}"
    return sorted((p.parent.name, p) for p in root.glob("month=*/*.parquet"))

