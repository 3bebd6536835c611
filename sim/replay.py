"""Replay: a directory of Binance kline archives becomes the market.

The 1m rows are the exchange's record (closed bars are the rows, byte for byte in their
decimals); every higher interval is folded from them by the same rule as the generated
market, which reproduces Binance's own 1h archives (``../shared/data/README.md``). Between
closes, the open bar and the aggTrade stream come from a few synthetic trades per minute
that walk open -> low/high -> close and split the minute's volumes, trade count and taker
volumes exactly, so the rebuilt minute equals the archive row on every field but the
per-trade quote (p x q of a synthetic trade only approximates the archive's quote volume).

Accepted: ``<SYMBOL>-1m-<date>.zip`` or ``.csv`` anywhere below the directory, with or
without a header line, in ms or µs timestamps (detected per value), checked against a
``.CHECKSUM`` file when one sits beside it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from klinestore.core.errors import InvalidSymbol
from klinestore.core.intervals import MINUTE_MS
from klinestore.core.symbols import check_symbol
from klinestore.sim.chunk import HOUR_MS, Chunk, Minutes, Trades
from klinestore.sim.errors import ReplayError
from klinestore.sim.fixed import decimals_of, parse_units
from klinestore.sim.instruments import SymbolSpec, base_asset

log = logging.getLogger(__name__)

_FILE = re.compile(r"(?P<symbol>[A-Z0-9_]+)-1m-\d{4}-\d{2}(?:-\d{2})?\.(?P<ext>zip|csv)")
_MICROS = 10**14  # ms timestamps stay below this until the year 5138
GROUPS_PER_MINUTE = 12  # synthetic aggregated trades per replayed minute, at most
_PRICE_COLS, _QTY_COLS, _QUOTE_COLS = (1, 2, 3, 4), (5, 9), (7, 10)


@dataclass(frozen=True, slots=True)
class _Series:
    """One symbol's archive, as integer columns sorted by open time."""

    spec: SymbolSpec
    open_time: np.ndarray
    close_time: np.ndarray
    values: np.ndarray  # (n, 9): open high low close volume quote trades taker_volume taker_quote
    first_tid: np.ndarray
    first_agg: np.ndarray


class ReplaySource:
    """The archives of one directory; ``symbols`` empty means every symbol found."""

    def __init__(self, directory: str | Path, symbols: tuple[str, ...] = ()) -> None:
        root = Path(directory)
        if not root.is_dir():
            raise ReplayError(f"replay directory not found: {root}")
        files: dict[str, list[Path]] = {}
        for path in sorted(root.rglob("*")):
            match = _FILE.fullmatch(path.name)
            if match and path.is_file():
                files.setdefault(match["symbol"], []).append(path)
        if not files:
            raise ReplayError(f"no Binance 1m kline archives (SYMBOL-1m-YYYY-MM[-DD].zip|csv) below {root}")
        missing = [s for s in symbols if s not in files]
        if missing:
            raise ReplayError(f"{', '.join(missing)} not in the replay archives of {root} (found {', '.join(sorted(files))})")
        self._series: dict[str, _Series] = {}
        for symbol in symbols or tuple(sorted(files)):
            try:
                check_symbol(symbol)
            except InvalidSymbol as exc:
                raise ReplayError(str(exc)) from None
            self._series[symbol] = _load(symbol, files[symbol])

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._series)

    def spec(self, symbol: str) -> SymbolSpec:
        return self._series[symbol].spec

    def typical_qty(self, symbol: str) -> float:
        """Mean quantity of a synthetic aggregated trade, in quantity units (sizes the order book)."""
        series = self._series[symbol]
        groups = int(np.minimum(series.values[:, 6], GROUPS_PER_MINUTE).sum())
        return float(series.values[:, 4].sum()) / max(1, groups)

    def first_ms(self, symbol: str) -> int:
        return int(self._series[symbol].open_time[0])

    def end_ms(self, symbol: str) -> int:
        """The minute after the archive's last row: the market ends there."""
        return int(self._series[symbol].open_time[-1]) + MINUTE_MS

    def build(self, symbol: str, hour_ms: int, onboard_ms: int | None = None) -> Chunk:
        series = self._series[symbol]
        lo, hi = np.searchsorted(series.open_time, [hour_ms, hour_ms + HOUR_MS])
        rows = range(int(lo), int(hi))
        minute_of = ((series.open_time[lo:hi] - hour_ms) // MINUTE_MS).astype(np.int64)
        cols = np.zeros((60, 9), dtype=np.int64)
        cols[minute_of] = series.values[lo:hi]
        present = np.zeros(60, dtype=bool)
        present[minute_of] = True
        # A missing minute keeps the last close so an open bar after it has a previous close.
        filled = np.maximum.accumulate(np.where(present, np.arange(60), -1))
        fallback = int(series.values[max(int(lo) - 1, 0), 3]) if len(series.values) else 0
        carry = np.where(filled >= 0, cols[np.maximum(filled, 0), 3], fallback)
        close_time = hour_ms + MINUTE_MS * np.arange(1, 61, dtype=np.int64) - 1
        close_time[minute_of] = series.close_time[lo:hi]
        trades = _synthetic_trades(series, rows)
        minutes = Minutes(
            open=np.where(present, cols[:, 0], carry), high=np.where(present, cols[:, 1], carry),
            low=np.where(present, cols[:, 2], carry), close=np.where(present, cols[:, 3], carry),
            volume=cols[:, 4], quote=cols[:, 5], trades=cols[:, 6], taker_volume=cols[:, 7],
            taker_quote=cols[:, 8],
            first_id=_ids(series.first_tid, rows, minute_of, cols[:, 6], first=True),
            last_id=_ids(series.first_tid, rows, minute_of, cols[:, 6], first=False),
            close_time=close_time, present=present,
        )
        return Chunk(hour_ms, trades, minutes)


def _ids(first_tid: np.ndarray, rows: range, minute_of: np.ndarray, counts: np.ndarray, *, first: bool) -> np.ndarray:
    out = np.full(60, -1, dtype=np.int64)
    if len(rows):
        firsts = first_tid[rows.start : rows.stop]
        out[minute_of] = firsts if first else firsts + counts[minute_of] - 1
    return np.where(counts > 0, out, -1)


def _load(symbol: str, paths: list[Path]) -> _Series:
    rows: dict[int, list[str]] = {}
    for path in paths:
        for row in _read_rows(path):
            rows[_ms(row[0], path)] = row
    if not rows:
        raise ReplayError(f"the archives of {symbol} hold no rows")
    ordered = [rows[t] for t in sorted(rows)]
    price_dec = max(decimals_of(r[c]) for r in ordered for c in _PRICE_COLS)
    qty_dec = max(decimals_of(r[c]) for r in ordered for c in _QTY_COLS)
    quote_dec = max(decimals_of(r[c]) for r in ordered for c in _QUOTE_COLS)
    scale = {**dict.fromkeys(_PRICE_COLS, price_dec), **dict.fromkeys(_QTY_COLS, qty_dec), **dict.fromkeys(_QUOTE_COLS, quote_dec)}
    try:
        values = np.array(
            [[parse_units(r[c], scale[c]) for c in (1, 2, 3, 4, 5, 7)] + [int(r[8])]
             + [parse_units(r[c], scale[c]) for c in (9, 10)] for r in ordered],
            dtype=np.int64,
        )
    except ValueError as exc:
        raise ReplayError(f"{symbol}: a trade count is not an integer: {exc}") from None
    open_time = np.array([_ms(r[0], paths[0]) for r in ordered], dtype=np.int64)
    close_time = np.array([_ms(r[6], paths[0]) for r in ordered], dtype=np.int64)
    tick = int(np.gcd.reduce(values[:, :4].ravel())) or 1
    base, quote = base_asset(symbol)
    spec = SymbolSpec(symbol, base, quote, price_dec, qty_dec, quote_dec, tick_units=tick)
    counts = values[:, 6]
    groups = np.minimum(counts, GROUPS_PER_MINUTE)
    first_tid = 10**9 + np.concatenate(([0], np.cumsum(counts)[:-1]))
    first_agg = 10**8 + np.concatenate(([0], np.cumsum(groups)[:-1]))
    log.info("replay %s: %d minutes from %d", symbol, len(ordered), open_time[0])
    return _Series(spec, open_time, close_time, values, first_tid, first_agg)


def _read_rows(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    checksum = path.with_name(path.name + ".CHECKSUM")
    if checksum.is_file():
        expected = checksum.read_text().split()[0].lower() if checksum.read_text().split() else ""
        if expected and hashlib.sha256(raw).hexdigest() != expected:
            raise ReplayError(f"{path}: sha256 does not match {checksum.name}")
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                members = [n for n in archive.namelist() if n.endswith(".csv")]
                if len(members) != 1:
                    raise ReplayError(f"{path}: expected one CSV inside, found {len(members)}")
                raw = archive.read(members[0])
        except zipfile.BadZipFile:
            raise ReplayError(f"{path}: not a zip file") from None
    out: list[list[str]] = []
    for number, row in enumerate(csv.reader(io.StringIO(raw.decode("utf-8", "replace")))):
        if not row or (number == 0 and not row[0].strip().isdigit()):
            continue  # blank line or header
        if len(row) < 11:
            raise ReplayError(f"{path}: line {number + 1} has {len(row)} columns, expected 12")
        out.append([c.strip() for c in row[:12]])
    return out


def _ms(text: str, path: Path) -> int:
    if not text.isdigit():
        raise ReplayError(f"{path}: not a timestamp: {text!r}")
    value = int(text)
    return value // 1000 if value >= _MICROS else value


def _split(total: int, parts: int) -> list[int]:
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


def _synthetic_trades(series: _Series, rows: range) -> Trades:
    """A few trades per replayed minute that rebuild the minute's row exactly (but quote per trade)."""
    cols: dict[str, list[int]] = {k: [] for k in ("time", "price", "qty", "quote", "agg_id", "first_tid", "last_tid")}
    maker: list[bool] = []
    tick = series.spec.tick_units
    for r in rows:
        o, h, lo, c, v, q, n, tv, tq = (int(x) for x in series.values[r])
        if n <= 0:
            continue
        groups = min(n, GROUPS_PER_MINUTE)
        prices = _path(o, h, lo, c, groups, tick)
        buy = [c >= o] + [prices[i] >= prices[i - 1] for i in range(1, groups)]
        tv = min(tv, v)
        tq = min(tq, q)
        if tv == 0:
            buy = [False] * groups
        elif tv == v:
            buy = [True] * groups
        elif groups >= 2:
            if not any(buy):
                buy[-1] = True
            if all(buy):
                buy[0] = False
        nb = sum(buy)
        ns = groups - nb
        qty_b, qty_s = iter(_split(tv, nb) if nb else []), iter(_split(v - tv, ns) if ns else [])
        quote_b, quote_s = iter(_split(tq, nb) if nb else []), iter(_split(q - tq, ns) if ns else [])
        tid = int(series.first_tid[r])
        t0 = int(series.open_time[r])
        for i, count in enumerate(_split(n, groups)):
            cols["time"].append(t0 + i * (MINUTE_MS // groups))
            cols["price"].append(prices[i])
            cols["qty"].append(next(qty_b) if buy[i] else next(qty_s))
            cols["quote"].append(next(quote_b) if buy[i] else next(quote_s))
            cols["agg_id"].append(int(series.first_agg[r]) + i)
            cols["first_tid"].append(tid)
            cols["last_tid"].append(tid + count - 1)
            maker.append(not buy[i])
            tid += count
    if not maker:
        return Trades.empty()
    arrays = {k: np.array(v, dtype=np.int64) for k, v in cols.items()}
    return Trades(maker=np.array(maker, dtype=bool), **arrays)


def _path(o: int, h: int, lo: int, c: int, groups: int, tick: int) -> list[int]:
    """Prices that start at the open, visit the extremes, and end at the close."""
    if groups == 1:
        return [o]
    if groups == 2:
        return [o, c]
    if groups == 3:
        return [o, h if h - max(o, c) >= min(o, c) - lo else lo, c]
    first, second = (lo, h) if c >= o else (h, lo)
    xs = [0, (groups - 1) // 3, 2 * (groups - 1) // 3, groups - 1]
    values = np.interp(np.arange(groups), xs, [o, first, second, c])
    return [int(math.floor(x / tick + 0.5)) * tick for x in values]
