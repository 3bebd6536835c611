"""1m bars into longer intervals, exactly as Binance aggregates them (vectorized Polars).

Per bucket (UTC-aligned on open time, ``klinestore.core.intervals``): open = the first non-empty
minute's open, high/low = max/min over non-empty minutes, close = the last non-empty close,
volume/quote volume/trades/taker volumes = sums, close time = the last minute's close time (the
exchange's own value, irregular at outages). An *empty* minute (volume 0: the exchange's bar at
the previous close) takes no part in open/high/low/close; a bucket whose minutes are all empty
is an empty bar at that price. A bucket missing any minute (or holding an incomplete one) has
``is_complete = False``. ``source = "resample"``.

Sums are exact. Exchange volumes are decimals with at most 8 places; the exchange sums them in
decimal and we parse its result to the nearest float64. Adding float64s instead can miss that
by an ulp (it did for 1 in 17 hourly bars of the real BTCUSDT archives). So every addend that
is provably such a decimal (``round(x * 1e8) / 1e8 == x``, below 2**53 / 1e8) is summed as an
integer count of 1e-8 and the integer sum divided by 1e8 once, a correctly rounded operation:
the result is bit-identical to the exchange's value. A bucket with any other addend (never
seen in exchange data) gets the correctly rounded sum of its float64 addends (``math.fsum``).

The aggregation is one pass of numpy ``reduceat`` over runs of a (symbol, open_time)-sorted
frame: a bucket is a run of consecutive rows, so no hashing and no per-group Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from klinestore.core.intervals import MINUTE_MS, check_interval, interval_ms
from klinestore.storage.frames import BAR_COLUMNS, MS_SCHEMA

SUM_COLUMNS: tuple[str, ...] = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
_SCALE = 100_000_000
_EXACT_LIMIT = float(2**53) / _SCALE
_OUTPUT = list(BAR_COLUMNS)
_WEEK_OFFSET_MS = 4 * 86_400_000  # 1970-01-05, the first Monday
_TIME = pl.Datetime("ms", "UTC")


def resample(bars_1m: pl.DataFrame, interval: str) -> pl.DataFrame:
    """Every bucket of ``interval`` that ``bars_1m`` (one row per symbol and minute) touches.

    Times may be Int64 ms or UTC datetimes; the result uses the same kind. Buckets still
    open (their last minute not yet seen) come out incomplete, like buckets with gaps.
    """
    return resample_many(bars_1m, (interval,))[interval]


def resample_many(bars_1m: pl.DataFrame, intervals: Sequence[str]) -> dict[str, pl.DataFrame]:
    """:func:`resample` into several intervals at once.

    Longer intervals are built from the partial aggregates of the longest shorter one that
    divides them (1h from 15m from 5m), so each pass over the data gets smaller; every
    aggregate used (first, last, max, min, integer sums, counts) composes exactly.
    """
    for interval in intervals:
        check_interval(interval)
        if interval_minutes(interval) <= 1:
            raise ValueError(f"cannot resample 1m bars into {interval}")
    datetimes = bars_1m.schema["open_time"] != pl.Int64
    frame = bars_1m.with_columns(pl.col("open_time", "close_time").dt.epoch("ms")) if datetimes else bars_1m
    if frame.is_empty():
        empty = pl.DataFrame(schema=MS_SCHEMA)
        return {iv: empty.with_columns(pl.col("open_time", "close_time").cast(_TIME)) if datetimes else empty for iv in intervals}
    source = _Source(frame)
    built: dict[str, _Partials] = {}
    out = {}
    for interval in sorted(intervals, key=interval_minutes):
        base = next((built[b] for b in sorted(built, key=interval_minutes, reverse=True) if _divides(b, interval)), None)
        built[interval] = _Partials.of_minutes(source, interval) if base is None else base.coarsen(interval)
        result = built[interval].bars(interval)
        out[interval] = result.with_columns(pl.col("open_time", "close_time").cast(_TIME)) if datetimes else result
    return {iv: out[iv] for iv in intervals}


def resample_touched(bars_1m: pl.DataFrame, interval: str, touched: pl.DataFrame) -> pl.DataFrame:
    """The buckets of ``interval`` that the just-closed minutes in ``touched`` completed or changed.

    See :func:`resample_touched_many`.
    """
    return resample_touched_many(bars_1m, (interval,), touched)[interval]


def resample_touched_many(
    bars_1m: pl.DataFrame, intervals: Sequence[str], touched: pl.DataFrame
) -> dict[str, pl.DataFrame]:
    """Incremental resampling: the buckets that the just-closed minutes in ``touched`` (symbol, open_time) complete.

    ``bars_1m`` holds the 1m bars known for those symbols around them (``touched``
    included), back to the start of the oldest bucket involved. Exchange time, per symbol,
    is the end of its latest minute: a bucket is emitted once that time reaches its end, and
    only if a touched minute lies in it or this batch is what closed it (a bucket whose last
    minutes are missing closes when a later minute arrives, and comes out incomplete).
    """
    datetimes = bars_1m.schema["open_time"] != pl.Int64
    ms = bars_1m.with_columns(pl.col("open_time", "close_time").dt.epoch("ms")) if datetimes else bars_1m
    if touched.schema["open_time"] != pl.Int64:
        touched = touched.with_columns(pl.col("open_time").dt.epoch("ms"))
    touched = touched.select("symbol", "open_time")
    longest = max(interval_minutes(i) for i in intervals) * MINUTE_MS
    older = ms.select("symbol", "open_time").join(touched, on=["symbol", "open_time"], how="anti")
    clock = (
        ms.group_by("symbol").agg(now=pl.col("open_time").max() + MINUTE_MS)
        .join(older.group_by("symbol").agg(before=pl.col("open_time").max() + MINUTE_MS), on="symbol", how="left")
        .join(touched.group_by("symbol").agg(first=pl.col("open_time").min()), on="symbol")
        .with_columns(low=pl.min_horizontal("first", pl.col("before") - MINUTE_MS) - longest)
    )
    near = ms.join(clock, on="symbol").filter(pl.col("open_time") >= pl.col("low").fill_null(pl.col("open_time")))
    # Resample every bucket near the touched minutes, then keep the wanted ones: one numpy
    # pass instead of selecting each interval's minutes with joins first (a flush of 1000
    # bars made ~110 small Polars queries, most of its time). A bucket cut by ``low`` ends
    # before any touched minute and before ``before``, so it is never kept.
    state = clock.select("symbol", "now", "before")
    out = {}
    for interval, frame in resample_many(near.select(ms.columns), intervals).items():
        hit = _with_bucket(touched, interval).select("symbol", pl.col("bucket").alias("open_time"), hit=pl.lit(True))
        frame = frame.join(state, on="symbol").join(hit.unique(), on=["symbol", "open_time"], how="left")
        end = pl.Series(bucket_ends(frame.get_column("open_time").to_numpy(), interval))
        newly = pl.col("before").is_null() | (end > pl.col("before"))
        frame = frame.filter((end <= pl.col("now")) & (pl.col("hit").is_not_null() | newly)).drop("now", "before", "hit")
        out[interval] = frame.with_columns(pl.col("open_time", "close_time").cast(_TIME)) if datetimes else frame
    return out


def resample_closed(
    bars_1m: pl.DataFrame, intervals: Sequence[str], hit: pl.DataFrame, clock: pl.DataFrame
) -> dict[str, pl.DataFrame]:
    """Recompute the buckets holding a minute of ``hit`` (symbol, open_time) that are closed.

    ``bars_1m`` (Int64 ms times) holds every minute of those buckets; ``clock`` (symbol,
    now) is each symbol's exchange time: a bucket is closed once ``now`` reaches its end.
    Unlike :func:`resample_touched_many` no bucket is emitted for being newly closed: these
    buckets were written before and are being corrected.
    """
    out = {}
    for interval, frame in resample_many(bars_1m, intervals).items():
        hits = _with_bucket(hit, interval).select("symbol", pl.col("bucket").alias("open_time")).unique()
        frame = frame.join(hits, on=["symbol", "open_time"], how="semi").join(clock, on="symbol")
        ends = bucket_ends(frame.get_column("open_time").to_numpy(), interval)
        out[interval] = frame.filter(pl.Series(ends) <= pl.col("now")).drop("now")
    return out


def _with_bucket(frame: pl.DataFrame, interval: str) -> pl.DataFrame:
    bucket = bucket_opens(frame.get_column("open_time").to_numpy(), interval)
    return frame.with_columns(pl.Series("bucket", bucket), pl.Series("end", bucket_ends(bucket, interval)))


def interval_minutes(interval: str) -> int:
    return 44_640 if interval == "1M" else interval_ms(interval) // MINUTE_MS


def _divides(short: str, long: str) -> bool:
    """True when every ``short`` bucket lies inside one ``long`` bucket."""
    if short in ("1M", "1w") or long == "1w" and short == "3d":
        return False
    if long == "1M":
        return 86_400_000 % interval_ms(short) == 0
    offset = _WEEK_OFFSET_MS if long == "1w" else 0
    return interval_ms(long) % interval_ms(short) == 0 and offset % interval_ms(short) == 0


class _Partials:
    """Per-bucket partial aggregates over a (symbol, open_time)-sorted 1m frame.

    Row ranges ``start:end`` index the 1m rows, so the rare inexact sum can be redone
    with ``math.fsum`` over the original addends at any level. A flag array that would be
    all true (every minute complete, every addend exact) is ``None``: the common case skips
    its reductions at every level.
    """

    def __init__(self, source: _Source, fields: dict[str, np.ndarray | None]) -> None:
        self.source = source
        self.f = fields

    @classmethod
    def of_minutes(cls, src: _Source, interval: str) -> _Partials:
        """The first level, reduced straight from the 1m columns (no per-minute partials)."""
        bucket = bucket_opens(src.open_time, interval)
        at = _bucket_starts(src.symbol_start, bucket)
        end = np.append(at[1:], src.n)
        add, low, high = np.add.reduceat, np.minimum.reduceat, np.maximum.reduceat
        fields: dict[str, np.ndarray | None] = {
            "open_time": bucket[at], "start": at, "end": end, "trades": add(src.trades, at), "minutes": end - at,
            "complete": None if src.complete is None else np.logical_and.reduceat(src.complete, at),
            "symbol_start": src.symbol_start[at],
        }
        if src.traded is None:  # every minute traded: no empty minute to leave out
            fields.update(first=at, last=end - 1, high=high(src.high, at), low=low(src.low, at))
        else:
            index = np.arange(src.n)
            fields.update(
                first=low(np.where(src.traded, index, src.n), at), last=high(np.where(src.traded, index, -1), at),
                high=high(np.where(src.traded, src.high, -np.inf), at), low=low(np.where(src.traded, src.low, np.inf), at),
            )
        for c in SUM_COLUMNS:
            units, ok = src.units[c]
            fields[f"{c}_units"] = add(units, at)
            fields[f"{c}_ok"] = None if ok is None else np.logical_and.reduceat(ok, at)
        return cls(src, fields)

    def coarsen(self, interval: str) -> _Partials:
        f = self.f
        bucket = bucket_opens(f["open_time"], interval)
        at = _bucket_starts(f["symbol_start"], bucket)
        add, low, high = np.add.reduceat, np.minimum.reduceat, np.maximum.reduceat
        out = {
            "open_time": bucket[at], "start": f["start"][at], "end": np.append(f["start"][at[1:]], f["end"][-1]),
            "first": low(f["first"], at), "last": high(f["last"], at),
            "high": high(f["high"], at), "low": low(f["low"], at),
            "trades": add(f["trades"], at), "minutes": add(f["minutes"], at), "complete": _all(f["complete"], at),
            "symbol_start": f["symbol_start"][at],
        }
        for c in SUM_COLUMNS:
            out[f"{c}_units"] = add(f[f"{c}_units"], at)
            out[f"{c}_ok"] = _all(f[f"{c}_ok"], at)
        return _Partials(self.source, out)

    def bars(self, interval: str) -> pl.DataFrame:
        f, src = self.f, self.source
        opens = f["open_time"]
        any_trade = f["last"] >= 0
        flat = src.close[f["start"]]  # an all-empty bucket: the empty minutes' price
        expected = (bucket_ends(opens, interval) - opens) // MINUTE_MS
        complete = f["minutes"] == expected
        n = len(opens)
        columns = {
            "symbol": src.symbol.gather(f["start"]),
            "interval": pl.Series([interval]).new_from_index(0, n),
            "open_time": opens,
            "close_time": src.close_time[f["end"] - 1],
            "open": np.where(any_trade, src.open[np.minimum(f["first"], src.n - 1)], flat),
            "high": np.where(any_trade, f["high"], flat),
            "low": np.where(any_trade, f["low"], flat),
            "close": np.where(any_trade, src.close[np.maximum(f["last"], 0)], flat),
            "trades": f["trades"],
            "is_complete": complete if f["complete"] is None else complete & f["complete"],
            "source": pl.Series(["resample"]).new_from_index(0, n),
        }
        for c in SUM_COLUMNS:
            columns[c] = self._sum(c)
        # Built column by column in the output order: eager Series work runs on this thread,
        # while DataFrame.select/with_columns would queue on Polars' (maybe busy) thread pool.
        return pl.DataFrame({c: columns[c] for c in _OUTPUT})

    def _sum(self, column: str) -> np.ndarray:
        """Exact decimal sums (module docstring); ``math.fsum`` where an addend is not exact.

        An integer total below 2**53 converts exactly and one IEEE division rounds it
        correctly; larger totals go through Python's correctly rounded int division.
        """
        f = self.f
        total, exact = f[f"{column}_units"], f[f"{column}_ok"]
        value = total.astype(np.float64) / _SCALE
        for i in np.flatnonzero(total >= 2**53):
            if exact is None or exact[i]:
                value[i] = int(total[i]) / _SCALE
        if exact is not None:
            x = self.source.sums[column]
            for i in np.flatnonzero(~exact):
                value[i] = math.fsum(x[f["start"][i]:f["end"][i]])
        return value


def _bucket_starts(symbol_start: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    """Row positions where a bucket starts: a new symbol or a new bucket open time."""
    new = symbol_start.copy()
    new[1:] |= bucket[1:] != bucket[:-1]
    return np.flatnonzero(new)


def _all(flags: np.ndarray | None, at: np.ndarray) -> np.ndarray | None:
    return None if flags is None else np.logical_and.reduceat(flags, at)


class _Source:
    """The numpy columns of the 1m frame, sorted by (symbol, open_time) (sorted here if it is not)."""

    def __init__(self, frame: pl.DataFrame) -> None:
        symbol = frame.get_column("symbol")
        starts = _symbol_starts(symbol)
        opens = frame.get_column("open_time").to_numpy()
        if not _is_sorted(symbol, starts, opens):
            frame = frame.sort("symbol", "open_time")
            symbol = frame.get_column("symbol")
            starts = _symbol_starts(symbol)
            opens = frame.get_column("open_time").to_numpy()
        get = frame.get_column
        self.n = frame.height
        self.symbol, self.symbol_start, self.open_time = symbol, starts, opens
        self.close_time = get("close_time").to_numpy()
        self.open, self.high, self.low, self.close = (get(c).to_numpy() for c in ("open", "high", "low", "close"))
        self.trades = get("trades").to_numpy()
        complete = get("is_complete").to_numpy()
        self.complete = None if complete.all() else complete
        self.sums = {c: get(c).to_numpy() for c in SUM_COLUMNS}
        traded = self.sums["volume"] != 0
        self.traded = None if traded.all() else traded
        self.units: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for c, x in self.sums.items():
            self.units[c] = _units(x)


def _units(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Each value as an integer count of 1e-8, and which values that is exact for (None: all).

    numpy, not Polars, divides: Polars multiplies by the reciprocal when dividing by a
    scalar, which is not correctly rounded and would reject exact values.
    """
    units = np.multiply(x, _SCALE)
    np.rint(units, out=units)
    ok = np.divide(units, _SCALE) == x
    if x.size and x.min() >= 0 and x.max() < _EXACT_LIMIT:  # NaN fails both: checked per value below
        if ok.all():
            return units.astype(np.int64), None
    else:
        ok &= (x >= 0) & (x < _EXACT_LIMIT)
    return np.where(ok, units, 0).astype(np.int64), ok


def _symbol_starts(symbol: pl.Series) -> np.ndarray:
    """True where a run of one symbol begins. A frame of one symbol (an import's group) is
    found with one comparison to its first value, 5x cheaper than comparing neighbours."""
    if symbol.len() and (symbol == symbol[0]).all():
        starts = np.zeros(symbol.len(), dtype=bool)
        starts[0] = True
        return starts
    return (symbol != symbol.shift(1)).fill_null(True).to_numpy()


def _is_sorted(symbol: pl.Series, starts: np.ndarray, opens: np.ndarray) -> bool:
    """Sorted by (symbol, open_time): times rise within each symbol run, and the runs' symbols rise."""
    rising = np.diff(opens) > 0
    rising |= starts[1:]
    if not rising.all():
        return False
    firsts = symbol.filter(pl.Series(starts))
    return firsts.len() < 2 or bool((firsts.slice(1) > firsts.slice(0, firsts.len() - 1)).all())


def bucket_opens(open_time: np.ndarray, interval: str) -> np.ndarray:
    """Open time of the ``interval`` bucket holding each open time (Int64 UTC ms, vectorized)."""
    if interval == "1M":
        return pl.Series(open_time).cast(_TIME).dt.truncate("1mo").dt.epoch("ms").to_numpy()
    length = interval_ms(interval)
    offset = _WEEK_OFFSET_MS if interval == "1w" else 0
    return (open_time - offset) // length * length + offset


def bucket_ends(opens: np.ndarray, interval: str) -> np.ndarray:
    """Open time of the bucket after each bucket opening at ``opens``."""
    if interval == "1M":
        return pl.Series(opens).cast(_TIME).dt.offset_by("1mo").dt.epoch("ms").to_numpy()
    return opens + interval_ms(interval)
