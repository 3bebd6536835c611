"""Pictures: candles with volume and their gaps; DataQual over time with gaps and reconnects.

Drawn on a bare :class:`matplotlib.figure.Figure` (the Agg canvas, no pyplot state, no
display needed), times on a UTC axis, written atomically as PNG. Missing bars are shaded
red and incomplete ones orange, so a hole in the data is never mistaken for a quiet market.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import numpy as np
import polars as pl
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from klinestore.core.errors import InvalidInterval
from klinestore.core.intervals import check_interval, next_open
from klinestore.core.symbols import check_symbol
from klinestore.queries.api import default_data_dir
from klinestore.queries.errors import QueryError
from klinestore.queries.files import atomic_output
from klinestore.queries.gaps import expected_end, missing_count, missing_runs
from klinestore.queries.inventory import Series, require_data_dir, require_series
from klinestore.queries.sql import connect, execute
from klinestore.queries.times import check_range, optional_ms, short
from klinestore.storage import Dataset

MAX_CANDLES = 20_000
DEFAULT_BARS = 120  # bars drawn at least when no range is given (a day of 1d bars is one candle)
DAY_MS = 86_400_000
_LINE_STYLES = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)))
_LINE_WIDTH, _LINE_STEP = 1.2, 2.4
_PLOT_POINTS = 14 * 72 * 0.9  # width of the plot area in points (figure 14 in, axes ~90 % of it)
DPI = 110
_UP, _DOWN, _GAP, _INCOMPLETE = "#26a69a", "#ef5350", "#d62728", "#ff7f0e"
_UTC = timezone.utc


def candles_chart(
    symbol: str, interval: str, start: Any, end: Any, out: Path | str, *, data_dir: Path | str | None = None,
    now_ms: int | None = None, market: str = "um",
) -> dict[str, Any]:
    """Candles with volume of ``[start, end)`` to ``out`` (PNG); returns what was drawn.

    Without ``start`` and ``end`` it draws the last stored day (at least :data:`DEFAULT_BARS`
    bars of a long interval); a range without a bar is an error, not an empty picture.
    """
    symbol, interval = check_symbol(symbol), check_interval(interval)
    data_dir = require_data_dir(default_data_dir(data_dir))
    start_ms, end_ms = optional_ms(start, name="start"), optional_ms(end, name="end")
    check_range(start_ms, end_ms)
    series = require_series(data_dir, symbol, interval, market=market)
    start_ms, end_ms = default_range(series, start_ms, end_ms)
    end_ms = expected_end(interval, end_ms, now_ms)
    if end_ms <= start_ms:
        raise QueryError(f"nothing to draw: no closed {interval} bar in [{short(start_ms)}, {short(end_ms)})")
    frame = Dataset(data_dir, market).read(symbol, interval, start_ms, end_ms)
    if frame.is_empty():
        raise QueryError(f"no {symbol} {interval} bar in [{short(start_ms)}, {short(end_ms)}): its stored bars "
                         f"open from {short(series.first_ms)} to {short(series.last_ms)}")
    if frame.height > MAX_CANDLES:
        raise QueryError(f"{frame.height:,} bars are too many candles to see; use a longer interval or a shorter range")
    missing = missing_runs(frame, interval, start_ms, end_ms, count_incomplete=False)
    incomplete = frame.filter(~pl.col("is_complete")).get_column("open_time").dt.epoch("ms").to_list()
    figure = Figure(figsize=(14, 7), dpi=DPI, layout="constrained")
    price, volume = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    _draw_candles(price, volume, frame, interval, end_ms - start_ms)
    for first, last in missing:
        for ax in (price, volume):
            ax.axvspan(_num(first), _num(next_open(last, interval)), color=_GAP, alpha=0.25, lw=0)
    for opened in incomplete:
        for ax in (price, volume):
            ax.axvspan(_num(opened), _num(next_open(opened, interval)), color=_INCOMPLETE, alpha=0.25, lw=0)
    count = missing_count(missing, interval)
    title = f"{symbol} {interval}  {short(start_ms)} .. {short(end_ms)} UTC  ({frame.height:,} bars"
    title += f", {count:,} missing in {len(missing)} gap{'s' if len(missing) != 1 else ''})" if missing else ")"
    price.set_title(title)
    price.set_ylabel("price")
    volume.set_ylabel("volume")
    legend = [Patch(color=_UP, label="up"), Patch(color=_DOWN, label="down")]
    if missing:
        legend.append(Patch(color=_GAP, alpha=0.4, label=f"missing ({count:,} bars)"))
    if incomplete:
        legend.append(Patch(color=_INCOMPLETE, alpha=0.4, label=f"incomplete ({len(incomplete)})"))
    price.legend(handles=legend, loc="upper left", fontsize="small")
    price.set_xlim(_num(start_ms), _num(end_ms))
    price.grid(alpha=0.25)
    _utc_axis(volume)
    _save(figure, out)
    return {"bars": frame.height, "missing": count, "gaps": len(missing), "incomplete": len(incomplete),
            "start": short(start_ms), "end": short(end_ms)}


def default_range(series: Series, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    """The range to draw when ``--start``/``--end`` are left out: the day (UTC) of the last stored bar,
    widened to :data:`DEFAULT_BARS` bars for long intervals; one bound given: a day from it."""
    after_last = next_open(series.last_ms, series.interval)
    if start_ms is not None:
        return start_ms, end_ms if end_ms is not None else max(after_last, start_ms + DAY_MS)
    if end_ms is not None:
        return end_ms - DAY_MS, end_ms
    day = series.last_ms - series.last_ms % DAY_MS
    step = after_last - series.last_ms
    return max(min(day, after_last - DEFAULT_BARS * step), series.first_ms), after_last


def dataqual_chart(out: Path | str, *, symbol: str | None = None, data_dir: Path | str | None = None) -> dict[str, Any]:
    """DataQual score over time per symbol, with open gaps shaded and reconnects marked, to ``out``."""
    where = f"WHERE symbol = '{check_symbol(symbol)}'" if symbol else ""
    con = connect(default_data_dir(data_dir))
    try:
        scores = _frame(con, f"SELECT ts, symbol, score FROM dataqual {where} ORDER BY symbol, ts")
        gaps = _frame(con, f"SELECT symbol, interval, start_time, end_time FROM gaps {where} ORDER BY start_time")
        reconnects = _frame(con, (
            "SELECT ts, conn_id, to_state FROM connection_events "
            "WHERE to_state IN ('LOST', 'RECONNECTING', 'FAILED') ORDER BY ts"
        ))
    finally:
        con.close()
    if scores.is_empty():
        raise QueryError("no DataQual scores recorded yet" + (f" for {symbol}" if symbol else "")
                         + " (the service publishes them every jobs.publish_interval seconds)")
    figure = Figure(figsize=(14, 5), dpi=DPI, layout="constrained")
    ax = figure.subplots()
    parts = scores.partition_by("symbol", as_dict=True, maintain_order=True)
    for i, ((name,), part) in enumerate(parts.items()):
        # Scores of several symbols are often equal (1.0): later lines are thinner and dashed, so
        # a line drawn over another leaves the one below visible at its sides and in the gaps.
        width = _LINE_WIDTH + _LINE_STEP * (len(parts) - 1 - i) / max(len(parts) - 1, 1)
        ax.step(_nums(part, "ts"), part.get_column("score").to_numpy(), where="post", label=str(name), lw=width,
                ls=_LINE_STYLES[i % len(_LINE_STYLES)], color=f"C{i % 10}")
    for row in gaps.iter_rows(named=True):  # end_time is the last missing open time: shade through its bar
        first = int(row["start_time"].timestamp() * 1000)
        last = int(row["end_time"].timestamp() * 1000)
        ax.axvspan(_num(first), _num(_bar_end(last, row["interval"])), color=_GAP, alpha=0.2, lw=0)
    for when in _nums(reconnects, "ts"):
        ax.axvline(when, color="#7f7f7f", ls="--", lw=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("DataQual score")
    handles, _ = ax.get_legend_handles_labels()
    if gaps.height:
        handles.append(Patch(color=_GAP, alpha=0.3, label=f"gaps ({gaps.height})"))
    if reconnects.height:
        handles.append(Line2D([], [], color="#7f7f7f", ls="--", label=f"reconnects ({reconnects.height})"))
    ax.legend(handles=handles, loc="lower left", fontsize="small", ncols=min(6, len(handles)))
    ax.set_title(f"DataQual {symbol or 'all symbols'} (UTC)")
    _utc_axis(ax)
    _save(figure, out)
    return {"scores": scores.height, "gaps": gaps.height, "reconnects": reconnects.height}


def _draw_candles(price: Any, volume: Any, frame: pl.DataFrame, interval: str, span_ms: int) -> None:
    if frame.is_empty():
        return
    x = _nums(frame, "open_time")
    step_ms = next_open(0, interval) if interval != "1M" else 30 * 86_400_000
    step = step_ms / 86_400_000
    o, h, lo, c = (frame.get_column(k).to_numpy() for k in ("open", "high", "low", "close"))
    up = c >= o
    colors = np.where(up, _UP, _DOWN)
    centre = x + step / 2
    price.vlines(centre, lo, h, colors=colors, lw=0.6)
    body = np.maximum(np.abs(c - o), (h.max() - lo.min()) * 1e-4)
    price.bar(centre, body, bottom=np.minimum(o, c), width=step * 0.7, color=colors, lw=0)
    # Volume as lines at least a pixel wide: bars narrower than a pixel (1 440 one-minute bars
    # across the panel) fall between pixel centres and leave blank bands where volume exists.
    bar_points = _PLOT_POINTS * step_ms / max(span_ms, step_ms)
    volume.vlines(centre, 0, frame.get_column("volume").to_numpy(), colors=colors,
                  lw=max(0.7 * bar_points, 72 / DPI), capstyle="butt")
    volume.set_ylim(bottom=0)


def _bar_end(open_ms: int, interval: str) -> int:
    try:
        return next_open(open_ms, check_interval(interval))
    except InvalidInterval:  # an interval this version does not know: shade to the open time
        return open_ms


def _utc_axis(ax: Any) -> None:
    locator = mdates.AutoDateLocator(tz=_UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=_UTC))
    ax.set_xlabel("UTC")
    ax.grid(alpha=0.25)


def _num(ms: int) -> float:
    return float(mdates.date2num(datetime.fromtimestamp(ms / 1000, tz=_UTC)))


def _nums(frame: pl.DataFrame, column: str) -> np.ndarray:
    """Matplotlib date numbers (days since the epoch) of a UTC datetime column."""
    return frame.get_column(column).dt.epoch("ms").to_numpy() / 86_400_000


def _frame(con: Any, query: str) -> pl.DataFrame:
    return pl.from_arrow(execute(con, query).read_all())  # type: ignore[return-value]


def _save(figure: Figure, out: Path | str) -> None:
    with atomic_output(Path(out)) as tmp:
        figure.savefig(tmp, format="png")
