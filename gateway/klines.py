"""``/fapi/v1/klines`` rows from the service's own data: history from the store, the newest
bars and the open bar from the ingest rings.

The window is the exchange's (``klinestore.ingest.protocol.params.bar_window``: the first
``limit`` bars from ``startTime``, else the last ``limit`` up to ``endTime`` or now, bars
opening within ``[startTime, endTime]``), and counting starts at the first stored bar, as the
exchange's starts at the listing. Within it the ring's newest contiguous run wins (it holds
every bar not yet flushed), the store answers for older bars, and the open bar is the newest
update the service received; in the moments after a bar's close time, before its close
message arrives (``CLOSE_GRACE_MS``), the answer is the one of just before the close. A bar the service never got (a gap it recorded) is missing
here as it is in the store, never invented.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import NamedTuple

import msgspec
import polars as pl

from klinestore.ingest.klines import CLOSE_GRACE_MS, KlineSeries
from klinestore.ingest.protocol.params import bar_window
from klinestore.ingest.protocol.wire import kline_row
from klinestore.storage import Dataset

#: Seconds the first stored open time of a series is trusted before it is looked up again.
FIRST_OPEN_TTL = 60.0
#: Encoded rows kept (about 200 bytes each): a bot polling the newest 500 bars re-encodes one.
ROW_CACHE = 50_000

_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "trades",
            "taker_buy_volume", "taker_buy_quote_volume")
Row = tuple[int, float, float, float, float, float, int, float, int, float, float]


class Decimals(NamedTuple):
    """How the exchange prints a symbol's numbers (exchangeInfo's precisions)."""

    price: int
    qty: int

    @property
    def quote(self) -> int:
        return self.price + self.qty


def format_row(row: Row, d: Decimals) -> list[int | str]:
    """One stored or live bar as the exchange's 12-field row, numbers at the symbol's decimals."""
    t, o, h, lo, c, v, close_time, q, n, vb, qb = row
    pd, qd, xd = d.price, d.qty, d.quote
    return kline_row(int(t), f"{o:.{pd}f}", f"{h:.{pd}f}", f"{lo:.{pd}f}", f"{c:.{pd}f}", f"{v:.{qd}f}",
                     int(close_time), f"{q:.{xd}f}", int(n), f"{vb:.{qd}f}", f"{qb:.{xd}f}")


class RowCache:
    """Rows encoded once: a bar's JSON depends only on its values and the symbol's decimals, so
    the key is exactly those (a corrected bar is a new key). Oldest entries go first past the bound."""

    def __init__(self, size: int = ROW_CACHE) -> None:
        self._size = size
        self._rows: dict[tuple[Row, Decimals], bytes] = {}
        self._encode = msgspec.json.Encoder().encode
        self.hits = 0

    def body(self, rows: list[Row], d: Decimals, open_bar: Row | None = None) -> bytes:
        """The JSON array of ``rows`` (closed, cached) and the ``open_bar`` (encoded fresh)."""
        cache, parts = self._rows, []
        for row in rows:
            key = (row, d)
            data = cache.get(key)
            if data is None:
                data = cache[key] = self._encode(format_row(row, d))
                if len(cache) > self._size:
                    del cache[next(iter(cache))]
            else:
                self.hits += 1
            parts.append(data)
        if open_bar is not None:
            parts.append(self._encode(format_row(open_bar, d)))
        return b"[" + b",".join(parts) + b"]"


class KlineRows:
    """Chooses and reads the bars of a klines answer (see the module docstring)."""

    def __init__(self, dataset: Dataset, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.dataset = dataset
        self._clock = clock
        self._first: dict[tuple[str, str], tuple[float, int | None]] = {}
        self.store_reads = 0  # answers that needed the store (the rest came from the rings alone)

    def rows(self, series: KlineSeries, start: int | None, end: int | None, limit: int,
             now: int) -> tuple[list[Row], Row | None]:
        """The closed bars of the answer and its open bar (None when the window has none)."""
        symbol, interval = series.symbol, series.interval
        ob = series.open_bar
        if ob is not None and ob.t > series.last_open_time and ob.T < now <= ob.T + CLOSE_GRACE_MS:
            now = ob.T  # its close is in flight: answer as of the newest bar received, not with a hole
        first_ms = None
        if start is not None:
            first_ms = self.first_open(symbol, interval, series)
        lo, hi, head = bar_window(interval, start, end, limit, now, first_ms)
        if hi < lo:
            return [], None
        out, ring_from = self._ring_rows(series, lo, hi)
        if lo < ring_from:
            older = self._store_rows(symbol, interval, lo, min(hi + 1, ring_from))
            out = older + out
        open_row = None
        if ob is not None and lo <= ob.t <= hi and (not out or ob.t > out[-1][0]):
            open_row = (ob.t, ob.o, ob.h, ob.l, ob.c, ob.v, ob.T, ob.q, ob.n, ob.V, ob.Q)
        if head:
            out = out[:limit]
            return out, open_row if open_row is not None and len(out) < limit else None
        if open_row is not None:
            return out[len(out) + 1 - limit:] if len(out) >= limit else out, open_row
        return out[-limit:], None

    def first_open(self, symbol: str, interval: str, series: KlineSeries) -> int | None:
        """Open time of the first bar kept (store or ring), cached for ``FIRST_OPEN_TTL`` seconds."""
        return self.first_kept(symbol, interval, series.ring.key_at(0) if len(series.ring) else None)

    def first_kept(self, symbol: str, interval: str, live_first: int | None) -> int | None:
        """The first stored open time (cached for ``FIRST_OPEN_TTL`` seconds) or ``live_first``, the older."""
        key = (symbol, interval)
        cached = self._first.get(key)
        now = self._clock()
        if cached is None or now - cached[0] > FIRST_OPEN_TTL:
            cached = (now, self._first_stored(symbol, interval))
            self._first[key] = cached
        first = cached[1]
        if live_first is not None:
            first = live_first if first is None else min(first, live_first)
        return first

    def _first_stored(self, symbol: str, interval: str) -> int | None:
        for part in self.dataset.partitions(interval):
            year, month = (int(x) for x in part.month.split("-"))
            begin = calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
            end = calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0)) * 1000
            frame = self.dataset.read(symbol, interval, begin, end)
            if frame.height:
                return int(frame.select(pl.col("open_time").dt.epoch("ms").min()).item())
        return None

    @staticmethod
    def _ring_rows(series: KlineSeries, lo: int, hi: int) -> tuple[list[Row], int]:
        """Closed bars of the ring's newest contiguous run opening in ``[lo, hi]``, and the open
        time the run starts at (past ``hi`` when the ring holds none): older bars are the store's."""
        n = series.contiguous_count()
        if not n:
            return [], hi + 1
        run_first = series.ring.key_at(-n)
        if series.last_open_time < lo or run_first > hi:
            return [], run_first
        rows = series.ring.tail(n)
        times = rows["open_time"]
        a, b = int(times.searchsorted(lo, "left")), int(times.searchsorted(hi, "right"))
        return [tuple(r)[:11] for r in rows[a:b].tolist()], run_first  # type: ignore[misc]

    def _store_rows(self, symbol: str, interval: str, lo: int, end: int) -> list[Row]:
        """Stored bars opening in ``[lo, end)``, oldest first."""
        self.store_reads += 1
        frame = self.dataset.read(symbol, interval, lo, end)
        if not frame.height:
            return []
        frame = frame.with_columns(pl.col("open_time", "close_time").dt.epoch("ms"))
        return frame.select(_COLUMNS).rows()  # type: ignore[return-value]
