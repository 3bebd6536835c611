"""Does a query cost more when more history is stored? One symbol-year of 1h bars at 1, 5, 10 years.

Three datasets of 50 symbols' 1h bars (one file per year, as compaction leaves a closed year), the
newest year the same in each, plus freqtrade's feather files of the same bars (one per pair,
the whole history). Every candidate (the Python API, SQL on a warm session, freqtrade's
feather path: read the whole file, its dedup, filter) runs once per round, all interleaved,
the same number of rounds; each figure is the best of its rounds. Cached under
``bench/out/`` between runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import polars as pl

from bench.bench_queries import OUT, _feather_columns, freqtrade_load
from bench.harness import Figure, interleaved, synthetic_bars
from klinestore.queries.api import bars
from klinestore.queries.api import sql as queries_sql
from klinestore.queries.sql import connect, execute
from klinestore.storage.frames import version_expr
from klinestore.storage.layout import IMPORT_WRITER, Stamper, dataset_root
from klinestore.storage.txn import Publish
from klinestore.storage.writer import row_group_rows, write_partitions

AREA = "history"
HOUR = 3_600_000
LAST_YEAR = 2024
SYMBOL = "S007USDT"


def dataset(symbols: int, years: int) -> tuple[Path, Path]:
    """(data_dir, the SYMBOL's feather file): ``years`` years of 1h bars ending with LAST_YEAR."""
    root = OUT / f"history-{symbols}x{years}y-rg{row_group_rows('1h')}"  # new files when the layout changes
    data_dir, feather = root / "data", root / f"{SYMBOL[:-4]}_USDT_USDT-1h-futures.feather"
    if (root / ".complete").exists():
        return data_dir, feather
    shutil.rmtree(root, ignore_errors=True)
    stamper = Stamper(IMPORT_WRITER)
    mine = []
    for k in range(years):  # one write per year: the one file compaction leaves in a closed year
        start = pd.Timestamp(LAST_YEAR - years + 1 + k, 1, 1, tz="UTC")
        hours = (366 if start.is_leap_year else 365) * 24
        frame = synthetic_bars(symbols, hours, interval="1h", step_ms=HOUR, t0=int(start.timestamp() * 1000), seed=k,
                               source="import")
        publish = Publish(data_dir, IMPORT_WRITER, stamper)
        write_partitions(publish, dataset_root(data_dir), frame.with_columns(version_expr(stamper.next())))
        publish.commit()
        mine.append(_feather_columns(frame.filter(pl.col("symbol") == SYMBOL)))
    pl.concat(mine).drop("symbol").to_pandas().to_feather(feather, compression="lz4", compression_level=9)
    (root / ".complete").touch()
    return data_dir, feather


def run(quick: bool) -> list[Figure]:
    symbols, histories = (10, (1, 2)) if quick else (50, (1, 5, 10))
    start, end = pd.Timestamp(LAST_YEAR, 1, 1, tz="UTC"), pd.Timestamp(LAST_YEAR + 1, 1, 1, tz="UTC")
    query = (f"SELECT * FROM bars_1h WHERE symbol = '{SYMBOL}' AND open_time >= '{start.isoformat()}' "
             f"AND open_time < '{end.isoformat()}'")
    candidates, sessions = {}, []
    for years in histories:
        data_dir, feather = dataset(symbols, years)
        con = connect(data_dir)
        sessions.append(con)
        rows = {bars(SYMBOL, "1h", start, end, data_dir=data_dir).height, execute(con, query).read_all().num_rows,
                len(freqtrade_load(feather, start, end))}
        assert rows == {8784}, rows  # 2024 is a leap year
        candidates[("api", years)] = lambda d=data_dir: bars(SYMBOL, "1h", start, end, data_dir=d)
        candidates[("sql", years)] = lambda c=con: execute(c, query).read_all()
        candidates[("api sql", years)] = lambda d=data_dir: queries_sql(query, data_dir=d)  # its kept session
        candidates[("freqtrade", years)] = lambda f=feather: freqtrade_load(f, start, end)
    best = interleaved(candidates, rounds=3 if quick else 9)
    for con in sessions:
        con.close()
    figures = []
    baseline = "freqtrade feather: read the whole file, its dedup, filter"
    for years in histories:
        notes = {"symbols": symbols, "years_stored": years, "rounds": 3 if quick else 9}
        ft = best[("freqtrade", years)] * 1000
        figures.append(Figure(AREA, f"Python API: one symbol-year of 1h bars, {years} y stored",
                              best[("api", years)] * 1000, "ms", ft, baseline, "lower", "<= freqtrade", notes))
        figures.append(Figure(AREA, f"SQL (warm session): one symbol-year of 1h bars, {years} y stored",
                              best[("sql", years)] * 1000, "ms", ft, baseline, "lower", "<= 2x freqtrade", notes))
        figures.append(Figure(AREA, f"queries.sql() (Python API, repeated calls): the same, {years} y stored",
                              best[("api sql", years)] * 1000, "ms", ft, baseline, "lower", "<= 2x freqtrade", notes))
    first, last = histories[0], histories[-1]
    for kind, name in (("api", "Python API"), ("sql", "SQL"), ("api sql", "queries.sql()")):
        figures.append(Figure(AREA, f"{name}: cost at {last} y stored over {first} y (same answer)",
                              best[(kind, last)] / best[(kind, first)], "x", better="lower", goal="<= 1.3x"))
    return figures
