"""Resampling: Binance's aggregation rules, bit-exact on real archives, and the incremental helper."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinestore.storage.frames import MS_SCHEMA
from klinestore.storage.resample import resample, resample_many, resample_touched
from storage_support import MINUTE, T0

pytestmark = pytest.mark.filterwarnings("ignore")
HOUR = 60 * MINUTE


def minutes_frame(rows: list[dict]) -> pl.DataFrame:
    base = {"symbol": "BTCUSDT", "interval": "1m", "trades": 1, "is_complete": True, "source": "ws"}
    full = []
    for row in rows:
        r = {**base, **row}
        r.setdefault("close_time", r["open_time"] + MINUTE - 1)
        for c in ("open", "high", "low", "close"):
            r.setdefault(c, r.get("price", 100.0))
        r.pop("price", None)
        for c in ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"):
            r.setdefault(c, 1.0)
        full.append(r)
    return pl.DataFrame(full).select(MS_SCHEMA.keys()).cast(MS_SCHEMA)


def empty_minute(t: int, price: float) -> dict:
    return {"open_time": t, "price": price, "volume": 0.0, "quote_volume": 0.0, "taker_buy_volume": 0.0,
            "taker_buy_quote_volume": 0.0, "trades": 0}


def test_empty_minutes_take_no_part_in_open_high_low_close() -> None:
    rows = [empty_minute(T0, 99.0), {"open_time": T0 + MINUTE, "open": 100, "high": 105, "low": 98, "close": 101},
            empty_minute(T0 + 2 * MINUTE, 101.0), {"open_time": T0 + 3 * MINUTE, "open": 102, "high": 103, "low": 101.5, "close": 102.5},
            empty_minute(T0 + 4 * MINUTE, 102.5)]
    (out,) = resample(minutes_frame(rows), "5m").to_dicts()
    assert (out["open"], out["high"], out["low"], out["close"]) == (100, 105, 98, 102.5)
    assert out["volume"] == 2.0 and out["trades"] == 2 and out["is_complete"] and out["source"] == "resample"
    assert out["close_time"] == T0 + 5 * MINUTE - 1


def test_all_empty_bucket_is_an_empty_bar_at_the_previous_close() -> None:
    (out,) = resample(minutes_frame([empty_minute(T0 + i * MINUTE, 42.5) for i in range(5)]), "5m").to_dicts()
    assert (out["open"], out["high"], out["low"], out["close"], out["volume"], out["trades"]) == (42.5, 42.5, 42.5, 42.5, 0, 0)
    assert out["is_complete"]


def test_missing_minutes_make_a_bucket_incomplete_and_keep_the_last_close_time() -> None:
    rows = [{"open_time": T0 + i * MINUTE} for i in (0, 1, 3)]
    rows[-1]["close_time"] = T0 + 3 * MINUTE + 12_345  # irregular: the exchange stopped mid-minute
    (out,) = resample(minutes_frame(rows), "5m").to_dicts()
    assert not out["is_complete"] and out["close_time"] == T0 + 3 * MINUTE + 12_345


def test_an_incomplete_minute_makes_its_bucket_incomplete() -> None:
    rows = [{"open_time": T0 + i * MINUTE, "is_complete": i != 2} for i in range(5)]
    assert not resample(minutes_frame(rows), "5m").item(0, "is_complete")


@pytest.mark.parametrize(
    ("interval", "first_open"),
    [("4h", T0 - 4 * HOUR), ("1d", T0 - 24 * HOUR), ("1h", T0 - HOUR), ("1w", T0 - 7 * 24 * HOUR), ("1M", 1_701_388_800_000)],
)
def test_buckets_align_on_utc_open_time(interval: str, first_open: int) -> None:
    # 2023-12-31 23:00 .. 2024-01-01 00:59: 2024-01-01 is a Monday
    rows = [{"open_time": T0 - HOUR + i * MINUTE} for i in range(120)]
    out = resample(minutes_frame(rows), interval)
    assert out.item(0, "open_time") == first_open
    assert out["open_time"].to_list() == sorted(set(out["open_time"].to_list()))


def test_datetimes_in_datetimes_out() -> None:
    frame = minutes_frame([{"open_time": T0 + i * MINUTE} for i in range(15)])
    public = frame.with_columns(pl.col("open_time", "close_time").cast(pl.Datetime("ms", "UTC")))
    out = resample(public, "15m")
    assert out.schema["open_time"] == pl.Datetime("ms", "UTC") and out.height == 1


def test_resample_many_equals_one_interval_at_a_time() -> None:
    frame = minutes_frame([{"open_time": T0 + i * MINUTE, "price": 100 + i % 13, "volume": (i % 4) * 0.25}
                           for i in range(0, 600) if i % 97])
    many = resample_many(frame, ("5m", "15m", "1h", "4h"))
    for interval, out in many.items():
        assert out.equals(resample(frame, interval))


@st.composite
def minute_series(draw: st.DrawFn) -> list[dict]:
    rows, price = [], 100.0
    for i in range(draw(st.integers(1, 130))):
        kind = draw(st.sampled_from(["trade", "trade", "trade", "empty", "missing"]))
        if kind == "missing":
            continue
        if kind == "empty":
            rows.append(empty_minute(T0 + i * MINUTE, price))
            continue
        cents = draw(st.lists(st.integers(1, 100_000), min_size=4, max_size=4))
        o, c, a, b = (x / 100 for x in cents)
        units = draw(st.integers(1, 10**12))
        quote = draw(st.integers(1, 10**15)) / 10**8
        rows.append({"open_time": T0 + i * MINUTE, "open": o, "close": c, "high": max(o, c, a, b),
                     "low": min(o, c, a, b), "volume": units / 10**8, "quote_volume": quote,
                     "taker_buy_volume": units // 3 / 10**8, "taker_buy_quote_volume": quote,
                     "trades": draw(st.integers(1, 999))})
        price = c
    return rows


def reference(rows: list[dict], length: int) -> dict[int, dict]:
    """Binance's rules written plainly, with decimal sums."""
    out: dict[int, dict] = {}
    for bucket in sorted({r["open_time"] // length * length for r in rows}):
        inside = [r for r in rows if r["open_time"] // length * length == bucket]
        traded = [r for r in inside if r["volume"] != 0] or None
        flat = inside[0]["price"] if "price" in inside[0] else inside[0]["close"]
        out[bucket] = {
            "open": traded[0]["open"] if traded else flat,
            "high": max(r["high"] for r in traded) if traded else flat,
            "low": min(r["low"] for r in traded) if traded else flat,
            "close": traded[-1]["close"] if traded else flat,
            "trades": sum(r["trades"] for r in inside),
            "is_complete": len(inside) == length // MINUTE,
            **{c: float(sum(Decimal(repr(r[c])) for r in inside))
               for c in ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")},
        }
    return out


@settings(max_examples=60, deadline=None)
@given(minute_series(), st.sampled_from([5, 15, 60]))
def test_matches_a_plain_reference_exactly(rows: list[dict], minutes: int) -> None:
    if not rows:
        return
    out = resample(minutes_frame(rows), f"{minutes}m" if minutes < 60 else "1h")
    expected = reference(rows, minutes * MINUTE)
    assert out["open_time"].to_list() == list(expected)
    for row in out.iter_rows(named=True):
        want = expected[row["open_time"]]
        assert {k: row[k] for k in want} == want  # bit-exact, sums included


def test_sums_of_values_finer_than_1e_8_are_correctly_rounded_float_sums() -> None:
    import math

    volumes = [1 / 3, 2 / 7, 1e-9, 0.1]
    out = resample(minutes_frame([{"open_time": T0 + i * MINUTE, "volume": v} for i, v in enumerate(volumes)]), "5m")
    assert out.item(0, "volume") == math.fsum(volumes)


@settings(max_examples=40, deadline=None)
@given(minute_series(), minute_series(), st.randoms(use_true_random=False))
def test_a_shuffled_frame_of_several_symbols_resamples_as_each_symbol_alone(
    first: list[dict], second: list[dict], rng
) -> None:
    """Whatever the row order, and whether or not a symbol has empty minutes, inexact sums or an
    incomplete minute (the fast paths for frames without any), each symbol's bars are its own."""
    second = [{**row, "is_complete": i % 7 != 3} for i, row in enumerate(second)]
    frames = [minutes_frame(rows).with_columns(pl.lit(symbol).alias("symbol"))
              for symbol, rows in (("BTCUSDT", first), ("ETHUSDT", second)) if rows]
    if not frames:
        return
    rows = pl.concat(frames)
    shuffled = rows[rng.sample(range(rows.height), rows.height)]
    intervals = ("5m", "15m", "1h", "4h")
    together = resample_many(shuffled, intervals)
    for frame in frames:
        alone = resample_many(frame, intervals)
        symbol = frame.item(0, "symbol")
        for interval in intervals:
            assert together[interval].filter(pl.col("symbol") == symbol).equals(alone[interval])


def test_touched_minute_emits_only_closed_buckets() -> None:
    frame = minutes_frame([{"open_time": T0 + i * MINUTE} for i in range(7)])
    touched = frame.tail(1).select("symbol", "open_time")
    assert resample_touched(frame, "5m", touched).height == 0  # 00:05 bucket still open
    frame = minutes_frame([{"open_time": T0 + i * MINUTE} for i in range(10)])
    out = resample_touched(frame, "5m", frame.tail(1).select("symbol", "open_time"))
    assert out["open_time"].to_list() == [T0 + 5 * MINUTE] and out.item(0, "is_complete")


def test_a_later_minute_closes_a_bucket_with_missing_tail_as_incomplete() -> None:
    frame = minutes_frame([{"open_time": T0 + i * MINUTE} for i in (0, 1, 2, 7)])
    out = resample_touched(frame, "5m", frame.tail(1).select("symbol", "open_time"))
    assert out["open_time"].to_list() == [T0] and not out.item(0, "is_complete")


def read_spot_1m(shared: Path) -> pl.DataFrame:
    from klinestore.storage.archive import describe, read_archive

    files = sorted((shared / "spot/klines/BTCUSDT/1m").glob("*.zip"))
    return pl.concat([read_archive(describe(f)) for f in files])


@pytest.mark.real_data
def test_real_spot_1m_resampled_to_1h_equals_the_exchange_file_on_all_12_columns(shared_data: Path) -> None:
    minutes = read_spot_1m(shared_data)
    hours = pl.read_csv(shared_data / "spot/klines/BTCUSDT/1h/BTCUSDT-1h-2023-01.csv", infer_schema_length=0)
    out = resample(minutes, "1h")
    assert out.height == 7 * 24 and out["is_complete"].all()
    exchange = hours.filter(pl.col("open_time").cast(pl.Int64).is_in(out["open_time"].to_list()))
    mine = out.select(
        pl.col("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume"),
        pl.col("trades").alias("count"), pl.col("taker_buy_volume", "taker_buy_quote_volume"),
    )
    theirs = exchange.drop("ignore").cast({c: mine.schema[c] for c in mine.columns})
    assert mine.equals(theirs)  # every value bit-identical, sums included


def read_feather(path: Path) -> pl.DataFrame:
    return pl.read_ipc(path).with_columns(pl.col("date").dt.cast_time_unit("ms").dt.epoch("ms"))


@pytest.mark.real_data
@pytest.mark.parametrize("pair", ["BTC", "ETH"])
def test_real_usdm_freqtrade_1m_resampled_to_5m_equals_the_exchange_5m(shared_data: Path, pair: str) -> None:
    folder = shared_data / "um/klines-freqtrade"
    m1 = read_feather(folder / f"{pair}_USDT_USDT-1m-futures.feather")
    m5 = read_feather(folder / f"{pair}_USDT_USDT-5m-futures.feather")
    minutes = m1.select(
        pl.lit(f"{pair}USDT").alias("symbol"), pl.lit("1m").alias("interval"), pl.col("date").alias("open_time"),
        (pl.col("date") + MINUTE - 1).alias("close_time"), "open", "high", "low", "close", "volume",
        pl.lit(0.0).alias("quote_volume"), pl.lit(0, pl.Int64).alias("trades"), pl.lit(0.0).alias("taker_buy_volume"),
        pl.lit(0.0).alias("taker_buy_quote_volume"), pl.lit(True).alias("is_complete"), pl.lit("import").alias("source"),
    )
    out = resample(minutes, "5m").filter(pl.col("is_complete"))
    joined = out.join(m5.rename({"date": "open_time"}), on="open_time", suffix="_x")
    assert joined.height == out.height > 2000  # every complete 5m bucket of the 1m file (it starts 3 weeks later)
    for column in ("open", "high", "low", "close", "volume"):
        assert (joined[column] == joined[f"{column}_x"]).all(), column
