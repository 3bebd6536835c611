"""Builders shared by the storage tests: bars, frames and archive files."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import duckdb
import polars as pl

from klinestore.storage import Bar
from klinestore.storage.reader import bars_relation_sql

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MINUTE = 60_000


def bar(symbol: str = "BTCUSDT", minute: int = 0, price: float = 100.0, *, interval: str = "1m",
        source: str = "ws", volume: float = 1.5, t0: int = T0) -> Bar:
    length = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240}[interval] * MINUTE
    open_time = t0 + minute * length
    return Bar(symbol, interval, open_time, open_time + length - 1, price, price + 1, price - 1, price + 0.5,
               volume, volume * price, 3 if volume else 0, volume / 2, volume * price / 2, source=source)


def kline_line(open_time: int, price: float = 100.0, volume: float = 1.5, micros: bool = False) -> str:
    scale = 1000 if micros else 1
    return (f"{open_time * scale},{price:.2f},{price + 1:.2f},{price - 1:.2f},{price + 0.5:.2f},{volume:.3f},"
            f"{(open_time + 59_999) * scale + (999 if micros else 0)},{volume * price:.5f},3,{volume / 2:.4f},"
            f"{volume * price / 2:.6f},0")


def kline_csv(day_start: int = T0, minutes: int = 1440, header: bool = False, micros: bool = False) -> str:
    head = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
            "taker_buy_quote_volume,ignore\n") if header else ""
    return head + "".join(kline_line(day_start + i * MINUTE, 100 + i % 7, 1 + i % 5, micros) + "\n" for i in range(minutes))


def write_zip(path: Path, text: str, *, checksum: bool = True) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(path.name.replace(".zip", ".csv"), text)
    if checksum:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return path


def sql_rows(data_dir: Path, where: str = "true", market: str = "um") -> pl.DataFrame:
    """Every row the SQL relation yields (what the queries layer will see)."""
    with duckdb.connect() as con:
        return con.sql(f"SELECT * FROM ({bars_relation_sql(data_dir, market=market)}) WHERE {where}").pl()


def assert_one_row_per_key(frame: pl.DataFrame) -> None:
    assert frame.select("symbol", "interval", "open_time").is_duplicated().sum() == 0
