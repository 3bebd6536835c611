"""Bars as exact integers and Binance's aggregation rule, in one place.

A higher-interval bar is the fold of its 1m bars: open of the first non-empty minute, high
and low over non-empty minutes, close of the last minute, sums of volumes, quote volumes,
trades and taker volumes. Empty minutes (no trades) carry the previous close and count only
for the close; a bucket of empty minutes is an empty bar at the previous close
(``../shared/data/README.md`` checks this on real archives). Streaming open bars, REST rows
and the ground truth all go through :func:`merge`, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from klinestore.core.intervals import bar_close
from klinestore.ingest.protocol.wire import kline_row
from klinestore.sim.instruments import SymbolSpec


class Bar(NamedTuple):
    """One kline in integer units of its symbol (see :class:`SymbolSpec`)."""

    open_time: int
    close_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote: int
    trades: int
    taker_volume: int
    taker_quote: int
    first_id: int = -1
    last_id: int = -1

    @property
    def empty(self) -> bool:
        return self.trades == 0


def empty_bar(open_time: int, close_time: int, price: int) -> Bar:
    """A minute without trades: O=H=L=C at the previous close, nothing traded."""
    return Bar(open_time, close_time, price, price, price, price, 0, 0, 0, 0, 0, -1, -1)


def merge(acc: Bar | None, bar: Bar) -> Bar:
    """``acc`` (earlier minutes of a bucket) followed by ``bar``, by Binance's rule."""
    if acc is None:
        return bar
    if bar.trades == 0:
        if acc.trades == 0:
            return acc._replace(open=bar.close, high=bar.close, low=bar.close, close=bar.close, close_time=bar.close_time)
        return acc._replace(close=bar.close, close_time=bar.close_time)
    if acc.trades == 0:
        return bar._replace(open_time=acc.open_time)
    return Bar(
        acc.open_time,
        bar.close_time,
        acc.open,
        acc.high if acc.high >= bar.high else bar.high,
        acc.low if acc.low <= bar.low else bar.low,
        bar.close,
        acc.volume + bar.volume,
        acc.quote + bar.quote,
        acc.trades + bar.trades,
        acc.taker_volume + bar.taker_volume,
        acc.taker_quote + bar.taker_quote,
        acc.first_id,
        bar.last_id,
    )


def finish(acc: Bar, open_time: int, interval: str) -> Bar:
    """Give a folded bucket its identity: the bucket's open time and close time.

    The close time is the bucket's last millisecond unless the bucket's final minute was folded
    with an irregular close time of its own (an exchange outage in a replayed archive), which
    is kept, as Binance keeps it.
    """
    close = bar_close(open_time, interval)
    if acc.close_time // 60_000 != close // 60_000:
        return acc._replace(open_time=open_time, close_time=close)
    return acc._replace(open_time=open_time) if acc.open_time != open_time else acc


def fold(minutes: Iterable[Bar], open_time: int, interval: str) -> Bar | None:
    """Aggregate the minutes of one bucket (None if there are none)."""
    acc: Bar | None = None
    for minute in minutes:
        acc = merge(acc, minute)
    return None if acc is None else finish(acc, open_time, interval)


def rest_row(bar: Bar, spec: SymbolSpec) -> list[int | str]:
    """The 12-field row of ``/fapi/v1/klines`` and of the archive CSVs."""
    p, q = spec.price, spec.qty
    return kline_row(bar.open_time, p(bar.open), p(bar.high), p(bar.low), p(bar.close), q(bar.volume),
                     bar.close_time, spec.quote(bar.quote), bar.trades, q(bar.taker_volume), spec.quote(bar.taker_quote))
