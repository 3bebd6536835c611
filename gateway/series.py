"""``/fapi/v1/markPriceKlines``, ``indexPriceKlines`` and ``fundingRate`` from the service's series.

The rows are the stored series (``mark``, ``index``, ``funding`` datasets) merged with the
rows not yet flushed (``MarkSeriesOut.recent``) and, for klines, the minute being built from
``markPrice@1s``: what the exchange would answer, in its layout (12-field rows with volumes
``"0"`` and the seconds sampled as the count; prices with at least 8 decimals), window and
errors (the simulator's and the klines' parameter code).

An interval the store keeps (1m and ``storage.resample_intervals``) is read as stored; any
other is folded from the longest stored interval that divides it, and the newest buckets
(not resampled yet) from the 1m rows. A bucket is served only when every second of it was
sampled (the open bucket: every second so far): a minute the stream missed makes a
different bar from the exchange's, so that bar is missing, as it is in the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from klinestore.core.intervals import DAY_MS, MINUTE_MS, bar_close, bar_open, check_interval, interval_ms, next_open
from klinestore.gateway.klines import KlineRows
from klinestore.gateway.rest import GatewayRest, not_ingested
from klinestore.ingest.markbars import MarkSeriesOut
from klinestore.ingest.protocol import params
from klinestore.ingest.protocol.http import Request
from klinestore.ingest.protocol.params import ApiError
from klinestore.ingest.protocol.rest import (
    FUNDING_DEFAULT_LIMIT,
    FUNDING_MAX_LIMIT,
    FUNDING_RATE_PATH,
    INDEX_KLINES_PATH,
    KLINES_DEFAULT_LIMIT,
    KLINES_MAX_LIMIT,
    MARK_KLINES_PATH,
)
from klinestore.storage import Dataset, read_funding

#: Binance prints mark and index prices with at least this many decimals.
MIN_PRICE_DECIMALS = 8


class Piece(NamedTuple):
    """A stored bar or a minute so far, as a bucket is folded from them."""

    open_time: int
    open: float
    high: float
    low: float
    close: float
    seconds: int


def not_kept(path: str, why: str) -> ApiError:
    """Binance's answer for a path it does not serve, saying which setting leaves it out."""
    return ApiError(-5000, f"Path {path}, Method GET is invalid (klinestore gateway: {why}).", status=404)


class SeriesRoutes:
    """The three endpoints over one service's series (see the module docstring)."""

    def __init__(self, rest: GatewayRest, out: MarkSeriesOut | None, data_dir: Path | str, *,
                 stored_intervals: Iterable[str], symbols: Any, mark_stream: bool) -> None:
        self.rest = rest
        self.out = out
        self.data_dir = data_dir
        self.stored = ("1m", *(iv for iv in stored_intervals if iv != "1m"))
        self._symbols = symbols  # the feed's symbols (a live mapping)
        self._why = ("the service keeps no store, so no series" if out is None else
                     "websocket.streams.mark_price is off, so no mark, index or funding series" if not mark_stream
                     else "")
        self._rows = {kind: KlineRows(Dataset(data_dir, kind)) for kind in ("mark", "index")}

    def install(self) -> None:
        self.rest.add_route(MARK_KLINES_PATH, lambda r, now: self._klines(r, now, "mark", "symbol", MARK_KLINES_PATH))
        self.rest.add_route(INDEX_KLINES_PATH, lambda r, now: self._klines(r, now, "index", "pair", INDEX_KLINES_PATH))
        self.rest.add_route(FUNDING_RATE_PATH, self._funding)

    def _series(self, path: str) -> MarkSeriesOut:
        if self._why:
            raise not_kept(path, self._why)
        assert self.out is not None
        return self.out

    def _symbol(self, request: Request, name: str, what: str) -> str:
        symbol = self.rest.symbol_param(request, name)
        if symbol not in self._symbols:
            raise not_ingested(f"{what} of {symbol}")
        return symbol

    def _decimals(self, symbol: str) -> int:
        return max(MIN_PRICE_DECIMALS, self.rest.decimals(symbol).price)

    # --- mark and index klines ------------------------------------------------------------

    def _klines(self, request: Request, now: int, kind: str, name: str, path: str) -> list[list[int | str]]:
        out = self._series(path)
        symbol = self._symbol(request, name, f"the {kind} price")
        interval = params.checked(request, "interval", check_interval, -1120, "Invalid interval.")
        limit = params.limit(request, KLINES_DEFAULT_LIMIT, KLINES_MAX_LIMIT)
        start, end = params.time_range(request)
        d = self._decimals(symbol)
        first_ms = None
        if start is not None:
            recent = out.recent.rows(kind, symbol)
            live = out.builder.open_minute(symbol, kind)
            first_live = recent[0].open_time if recent else live[0] if live else None
            first_ms = self._rows[kind].first_kept(symbol, "1m", first_live)
        lo, hi, head = params.bar_window(interval, start, end, limit, now, first_ms)
        if hi < lo:
            return []
        bars = [b for b in self._buckets(out, kind, symbol, interval, lo, hi, now) if lo <= b.open_time <= hi]
        bars = bars[:limit] if head else bars[-limit:]
        return [[b.open_time, f"{b.open:.{d}f}", f"{b.high:.{d}f}", f"{b.low:.{d}f}", f"{b.close:.{d}f}", "0",
                 bar_close(b.open_time, interval), "0", b.seconds, "0", "0", "0"] for b in bars]

    def _buckets(self, out: MarkSeriesOut, kind: str, symbol: str, interval: str, lo: int, hi: int,
                 now: int) -> list[Piece]:
        """The complete buckets of ``interval`` opening in ``[bar_open(lo), hi]`` (see the module docstring)."""
        first, stop = bar_open(lo, interval), next_open(bar_open(hi, interval), interval)
        source = self._source(interval)
        pieces: list[Piece] = []
        after = first
        if source != "1m":
            full = interval_ms(source) // 1000
            pieces = [p for p in self._stored(kind, symbol, source, first, stop) if p.seconds == full]
            if pieces:
                after = pieces[-1].open_time + interval_ms(source)
        minutes = {p.open_time: p for p in self._stored(kind, symbol, "1m", after, stop)}
        for bar in out.recent.rows(kind, symbol):  # durable, perhaps not in Parquet yet
            if bar.interval == "1m" and after <= bar.open_time < stop:
                minutes[bar.open_time] = Piece(bar.open_time, bar.open, bar.high, bar.low, bar.close, 60)
        live = out.builder.open_minute(symbol, kind)
        if live is not None and after <= live[0] < stop and live[0] not in minutes:
            minutes[live[0]] = Piece(live[0], *live[1], live[2])
        pieces += [minutes[t] for t in sorted(minutes)]
        return _complete(_fold(pieces, interval), interval, now)

    def _source(self, interval: str) -> str:
        """The longest stored interval whose buckets tile ``interval``'s."""
        if interval in self.stored:
            return interval
        span = DAY_MS if interval == "1M" else interval_ms(interval)
        fits = [iv for iv in self.stored if iv != "1M" and span % interval_ms(iv) == 0]
        return max(fits, key=interval_ms)

    def _stored(self, kind: str, symbol: str, interval: str, lo: int, end: int) -> list[Piece]:
        if end <= lo:
            return []
        frame = Dataset(self.data_dir, kind).read(symbol, interval, lo, end)
        if not frame.height:
            return []
        frame = frame.with_columns(pl.col("open_time").dt.epoch("ms"))
        return [Piece(*row) for row in frame.select("open_time", "open", "high", "low", "close", "trades").rows()]

    # --- funding ------------------------------------------------------------------------

    def _funding(self, request: Request, now: int) -> list[dict[str, Any]]:
        out = self._series(FUNDING_RATE_PATH)
        one = self._symbol(request, "symbol", "the funding of") if request.param("symbol") else None
        limit = params.limit(request, FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT)
        start, end = params.time_range(request)
        lo, hi = start or 0, now if end is None else min(end, now)
        events: list[tuple[int, str, float, float | None]] = []
        for symbol in [one] if one is not None else sorted(self._symbols):
            found: dict[int, tuple[float, float | None]] = {}
            if hi >= lo:
                frame = read_funding(self.data_dir, symbol, lo, hi + 1)
                for t, rate, mark in frame.select(pl.col("funding_time").dt.epoch("ms"), "funding_rate",
                                                  "mark_price").rows():
                    found[t] = (rate, mark)
            for row in out.recent.rows("funding", symbol):
                if lo <= row.open_time <= hi:
                    found[row.open_time] = (row.open, None if math.isnan(row.close) else row.close)
            events += [(t, symbol, rate, mark) for t, (rate, mark) in found.items()]
        events.sort(key=lambda e: (e[0], e[1]))
        events = events[:limit] if start is not None else events[-limit:]
        decimals: dict[str, int] = {}
        body = []
        for t, symbol, rate, mark in events:
            d = decimals.get(symbol) or decimals.setdefault(symbol, self._decimals(symbol))
            body.append({"symbol": symbol, "fundingRate": f"{rate:.8f}", "fundingTime": t,
                         "markPrice": "" if mark is None else f"{mark:.{d}f}"})
        return body


def _fold(pieces: list[Piece], interval: str) -> list[Piece]:
    out: list[Piece] = []
    for p in pieces:
        opened = bar_open(p.open_time, interval)
        if out and out[-1].open_time == opened:
            acc = out[-1]
            out[-1] = Piece(opened, acc.open, max(acc.high, p.high), min(acc.low, p.low), p.close,
                            acc.seconds + p.seconds)
        else:
            out.append(p._replace(open_time=opened))
    return out


def _complete(buckets: list[Piece], interval: str, now: int) -> list[Piece]:
    """Buckets every second of which was sampled; the open one (holding ``now``'s minute or
    the minute just closed) when its seconds run without a gap from its open."""
    kept = []
    for b in buckets:
        full = (next_open(b.open_time, interval) - b.open_time) // 1000
        elapsed = (now // MINUTE_MS * MINUTE_MS - b.open_time) // 1000  # seconds of its closed minutes
        if b.seconds == full or (0 <= elapsed < full and elapsed <= b.seconds < elapsed + 60):
            kept.append(b)
    return kept
