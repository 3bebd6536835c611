"""Mark and index 1m bars and funding events, built from ``<symbol>@markPrice@1s`` updates.

Pure (events in, rows out): :class:`MarkSeriesBuilder` folds the updates of each symbol;
:class:`MarkSeriesOut` hands its rows to the storage sinks, holding them back while a sink
fails, as the dispatcher does with closed klines.

Rules (Binance's): a mark (index) 1m bar is the OHLC of the 1 s mark (index) prices of its
minute. A minute is written only when all 60 of its seconds were seen (the stream ticks every
second, trades or not): a minute the stream partly missed (the first after a start, one
across a reconnect) would be a different bar from the exchange's, so it is counted
(``partial_minutes``) and left missing, for REST or an archive to fill. A funding event at
``F`` charges the rate that the updates before ``F`` showed with ``T = F``; its mark price is
the mark price of the update at second ``F`` (unknown, NULL, if that second was missed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from klinestore.core.intervals import MINUTE_MS
from klinestore.core.schema import Bar
from klinestore.ingest.protocol.events import AggTradeEvent, MarkPriceEvent
from klinestore.ingest.recent import RecentRows
from klinestore.storage import AggTrade, funding_row, price_bar

log = logging.getLogger(__name__)
#: Rows held back per series while its sink fails, before the oldest are dropped (and counted).
MAX_HELD = 100_000
SECONDS_PER_MINUTE = 60


class RowSink(Protocol):
    """Storage's side: ``append`` makes rows durable (a WAL) or raises (``ValueError``: a row refused)."""

    def append(self, rows: Sequence[Any]) -> None: ...


@dataclass(slots=True)
class _Minute:
    open_time: int
    seconds: int = 0
    mark: list[float] = field(default_factory=list)  # open, high, low, close
    index: list[float] | None = None
    index_seen: int = 0

    def add(self, mark: float, index: float | None) -> None:
        self.seconds += 1
        self.mark = _fold(self.mark, mark)
        if index is not None:
            self.index = _fold(self.index or [], index)
            self.index_seen += 1


def _fold(ohlc: list[float], price: float) -> list[float]:
    if not ohlc:
        return [price, price, price, price]
    return [ohlc[0], max(ohlc[1], price), min(ohlc[2], price), price]


@dataclass(slots=True)
class _Symbol:
    last_second: int = -1
    minute: _Minute | None = None
    funding_time: int | None = None  # the T of the last update
    rate: float | None = None  # its r


class MarkSeriesBuilder:
    """Per symbol, the minute being built and the funding period in force (see the module docstring).

    ``unknown_mark=False`` (fallback mode, where REST fills funding): an event whose mark price
    was missed is left to REST rather than stored with a NULL one over REST's (counted).
    """

    def __init__(self, *, unknown_mark: bool = True) -> None:
        self._symbols: dict[str, _Symbol] = {}
        self.unknown_mark = unknown_mark
        self.partial_minutes = 0  # minutes not written: some of their seconds were not seen
        self.stale = 0  # updates for a second already seen, or older
        self.funding_left = 0  # funding events left to REST: their mark price was missed

    def update(self, ev: MarkPriceEvent) -> list[tuple[str, Bar]]:
        """Fold one update; the rows it completes, as (series, row): ``mark``, ``index``, ``funding``."""
        state = self._symbols.setdefault(ev.s, _Symbol())
        second = ev.E - ev.E % 1000
        if second <= state.last_second:
            self.stale += 1
            return []
        state.last_second = second
        out: list[tuple[str, Bar]] = []
        minute_open = second - second % MINUTE_MS
        if state.minute is not None and state.minute.open_time != minute_open:
            out += self._close(ev.s, state.minute)
            state.minute = None
        if state.minute is None:
            state.minute = _Minute(minute_open)
        state.minute.add(ev.p, ev.i)
        if state.funding_time is not None and ev.T > state.funding_time and second >= state.funding_time:
            mark = ev.p if second == state.funding_time else None
            if state.rate is not None and (mark is not None or self.unknown_mark):  # the period's rate, settled
                out.append(("funding", funding_row(ev.s, state.funding_time, state.rate, mark)))
            elif state.rate is not None:
                self.funding_left += 1
        state.funding_time, state.rate = ev.T, ev.funding_rate
        return out

    def _close(self, symbol: str, minute: _Minute) -> list[tuple[str, Bar]]:
        if minute.seconds < SECONDS_PER_MINUTE:
            self.partial_minutes += 1
            return []
        out = [("mark", price_bar(symbol, "1m", minute.open_time, tuple(minute.mark)))]  # type: ignore[arg-type]
        if minute.index is not None and minute.index_seen == SECONDS_PER_MINUTE:
            out.append(("index", price_bar(symbol, "1m", minute.open_time, tuple(minute.index))))  # type: ignore[arg-type]
        return out

    def open_minute(self, symbol: str, kind: str) -> tuple[int, tuple[float, float, float, float], int] | None:
        """The minute being built for ``kind`` (``mark``/``index``): open time, OHLC so far and the
        seconds seen, or None (no update yet, or an index missing from some of its seconds)."""
        state = self._symbols.get(symbol)
        minute = None if state is None else state.minute
        if minute is None:
            return None
        if kind == "mark":
            return minute.open_time, tuple(minute.mark), minute.seconds  # type: ignore[return-value]
        if minute.index is None or minute.index_seen != minute.seconds:
            return None
        return minute.open_time, tuple(minute.index), minute.seconds  # type: ignore[return-value]

    def remove(self, symbol: str) -> None:
        self._symbols.pop(symbol, None)


class MarkSeriesOut:
    """Builds the series from the updates and makes their rows durable in the series' sinks
    (and each aggTrade, when storage keeps them: an ``agg_trades`` sink).

    A sink that raises ``ValueError`` refused a row as invalid: it is dropped and counted
    (``refused``); any other failure holds the rows back for the next update (bounded,
    ``dropped`` counts what the bound threw away). Rows made durable are also kept in
    ``recent`` until a flush has published them (:class:`RecentRows`), for readers of the store.
    """

    def __init__(self, sinks: Mapping[str, RowSink], *, unknown_mark: bool = True) -> None:
        self.sinks = dict(sinks)
        self.builder = MarkSeriesBuilder(unknown_mark=unknown_mark)
        self.recent = RecentRows()
        self._held: dict[str, list[Any]] = {kind: [] for kind in self.sinks}
        self.written: dict[str, int] = dict.fromkeys(self.sinks, 0)
        self.refused = 0
        self.errors = 0
        self.dropped = 0

    def on_mark(self, ev: MarkPriceEvent) -> None:
        rows = self.builder.update(ev)
        for kind, held in self._held.items():
            new = [row for k, row in rows if k == kind]
            if held or new:
                self._persist(kind, [*held, *new])

    def on_trade(self, ev: AggTradeEvent) -> None:
        """Keep one aggTrade (only when storage keeps them: an ``agg_trades`` sink)."""
        held = self._held.get("agg_trades")
        if held is not None:
            self._persist("agg_trades", [*held, AggTrade(ev.s, ev.a, ev.p, ev.q, ev.f, ev.l, ev.T, ev.m)])

    def append(self, kind: str, rows: Sequence[Any]) -> None:
        """Rows of one series from elsewhere (REST), through the same sink and hold-back."""
        self._persist(kind, [*self._held[kind], *rows])

    def _persist(self, kind: str, rows: list[Any]) -> None:
        sink = self.sinks[kind]
        self._held[kind] = []
        try:
            sink.append(rows)
            self.written[kind] += len(rows)
            self.recent.extend(kind, rows)
            return
        except ValueError:
            pass
        except Exception as exc:  # noqa: BLE001 - storage's failure: hold the rows
            self._hold(kind, rows, exc)
            return
        for i, row in enumerate(rows):  # one was refused: find it, keep the others
            try:
                sink.append((row,))
                self.written[kind] += 1
                self.recent.extend(kind, (row,))
            except ValueError as exc:
                self.refused += 1
                log.warning("%s row refused: %r: %s", kind, row, exc)
            except Exception as exc:  # noqa: BLE001 - the sink went down half-way
                self._hold(kind, rows[i:], exc)
                return

    def _hold(self, kind: str, rows: list[Any], exc: BaseException) -> None:
        self.errors += 1
        log.error("%s rows not durable, holding %d: %r", kind, len(rows), exc)
        held = self._held[kind] = rows
        if len(held) > MAX_HELD:
            self.dropped += len(held) - MAX_HELD
            del held[: len(held) - MAX_HELD]

    @property
    def held(self) -> int:
        return sum(len(rows) for rows in self._held.values())

    def status(self) -> dict[str, object]:
        return {"written": dict(self.written), "partial_minutes": self.builder.partial_minutes,
                "stale": self.builder.stale, "funding_left_to_rest": self.builder.funding_left,
                "refused": self.refused, "errors": self.errors,
                "held": self.held, "dropped": self.dropped, "recent_rows": len(self.recent),
                "recent_dropped": self.recent.dropped}
