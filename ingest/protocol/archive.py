"""The exchange's archive host (data.binance.vision): paths, checksum files, what to fetch for a range.

Pure, shared by ``klinestore download`` and the simulator that serves the same layout::

    /data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip
    /data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip.CHECKSUM
    /data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip
    /data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01-01.zip

A ``.CHECKSUM`` holds ``<sha256 hex>  <file name>``. A day's archive appears after the day
ends (UTC); a month's after the month ends. :func:`plan` takes whole calendar months in the
range as monthly archives and the rest as daily ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from klinestore.core.intervals import check_interval
from klinestore.core.symbols import check_symbol

DEFAULT_ARCHIVE_URL = "https://data.binance.vision"
ROOT = "/data/futures/um"
KLINE_KINDS = ("klines", "markPriceKlines", "indexPriceKlines")
KINDS = ("klines", "aggTrades", "fundingRate", "markPriceKlines", "indexPriceKlines")
#: Kinds the host publishes only by month (fundingRate: ``BTCUSDT-fundingRate-2024-01.zip``).
MONTHLY_ONLY = ("fundingRate",)
CHECKSUM_SUFFIX = ".CHECKSUM"
_PATH = re.compile(
    r"/data/futures/um/(?P<period>daily|monthly)/(?P<kind>klines|markPriceKlines|indexPriceKlines|aggTrades|fundingRate)/"
    r"(?P<symbol>[A-Z0-9]{2,30})/(?:(?P<interval>[0-9]+[a-zA-Z]{1,2})/)?"
    r"(?P=symbol)-(?P<label>[0-9a-zA-Z]+)-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.zip(?P<checksum>\.CHECKSUM)?"
)
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ArchiveRef:
    """One archive: ``kind`` for ``symbol`` (and kline ``interval``) over ``day`` or, monthly, its month."""

    kind: str
    symbol: str
    interval: str | None
    day: date  # the first day of the month for a monthly archive
    monthly: bool = False

    @property
    def label(self) -> str:
        return self.day.strftime("%Y-%m") if self.monthly else self.day.isoformat()

    @property
    def name(self) -> str:
        middle = self.interval if self.kind in KLINE_KINDS else self.kind
        return f"{self.symbol}-{middle}-{self.label}.zip"

    @property
    def path(self) -> str:
        folder = f"{self.symbol}/{self.interval}" if self.kind in KLINE_KINDS else self.symbol
        return f"{ROOT}/{'monthly' if self.monthly else 'daily'}/{self.kind}/{folder}/{self.name}"

    @property
    def end(self) -> date:
        """The day after the last day the archive covers."""
        return next_month(self.day) if self.monthly else self.day + timedelta(days=1)


def next_month(day: date) -> date:
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def parse_path(path: str) -> tuple[ArchiveRef, bool] | None:
    """The archive a host path names and whether it is its ``.CHECKSUM``, or None."""
    match = _PATH.fullmatch(path)
    if match is None:
        return None
    kind, interval = match["kind"], match["interval"]
    if (kind in KLINE_KINDS) != (interval is not None) or match["label"] != (interval or kind):
        return None
    monthly = match["period"] == "monthly"
    text = match["date"]
    try:
        day = date.fromisoformat(text + "-01" if monthly else text)
        if interval is not None:
            check_interval(interval)
    except ValueError:
        return None
    if monthly != (len(text) == 7):
        return None
    return ArchiveRef(kind, match["symbol"], interval, day, monthly), match["checksum"] is not None


def checksum_text(digest: str, name: str) -> str:
    return f"{digest}  {name}\n"


def parse_checksum(text: str) -> str | None:
    """The sha256 hex digest of a ``.CHECKSUM`` body, or None when it holds none."""
    first = text.strip().split()[:1]
    return first[0].lower() if first and _HEX.fullmatch(first[0].lower()) else None


def plan(
    symbols: list[str], intervals: list[str], kinds: list[str], start: date, end: date, today: date
) -> list[ArchiveRef]:
    """Archives covering the days ``[start, end)`` that the host can have on ``today`` (UTC).

    Whole calendar months whose last day has passed are one monthly archive each; every other
    day a daily one. Days from ``today`` on are left out (not published yet).
    """
    end = min(end, today)
    out: list[ArchiveRef] = []
    for kind in kinds:
        for symbol in (check_symbol(s) for s in symbols):
            for interval in ([check_interval(i) for i in intervals] if kind in KLINE_KINDS else [None]):
                out.extend(_covering(kind, symbol, interval, start, end))
    return list(dict.fromkeys(out))  # a symbol or interval named twice is fetched once


def _covering(kind: str, symbol: str, interval: str | None, start: date, end: date) -> list[ArchiveRef]:
    out, day = [], start
    if kind in MONTHLY_ONLY:  # every month touching the range, once it is over
        day = date(start.year, start.month, 1)
        while day < end and next_month(day) <= end:
            out.append(ArchiveRef(kind, symbol, interval, day, monthly=True))
            day = next_month(day)
        return out
    while day < end:
        if day.day == 1 and next_month(day) <= end:
            out.append(ArchiveRef(kind, symbol, interval, day, monthly=True))
            day = next_month(day)
        else:
            out.append(ArchiveRef(kind, symbol, interval, day))
            day += timedelta(days=1)
    return out
