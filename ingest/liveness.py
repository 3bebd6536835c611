"""Quiet or missing: is a silent stream a calm market or a broken feed?

The seed's rule (a stream silent for ``heartbeat.timeout`` is missing) was written for liquid
pairs. Many listed perpetuals go minutes without a trade, and then their aggTrade (and
often depth) streams are rightly silent: flagging them raises false alarms, needless
resubscriptions and DataQual penalties for a quiet market. So a silent stream is judged
by evidence that data should have arrived after its last frame:

* ``aggTrade``: the same symbol's kline streams showed trades (a trade count that grew);
* ``depth``: trades happened (either kind of evidence): trades take liquidity, the book moves;
* ``kline_<iv>``: a bar of its interval should have closed (Binance closes every bar, trades
  or not), or trades happened;
* ``markPrice@1s``: it ticks every second regardless of trades, so silence longer than
  ``heartbeat.mark_price_timeout`` (or ``heartbeat.timeout`` if shorter) is enough;
* anything else: silence is enough (the seed's rule).

Evidence is recorded in monotonic arrival seconds, the clock of the connections' last-seen
times; streams of one symbol ride different connections, so evidence must be ``slack``
seconds newer than the stream's last frame to count. A connection silent as a whole is
still dropped by the pool, whatever its streams carry.
"""

from __future__ import annotations

from klinestore.core.intervals import bar_open, next_open
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.klines import CLOSE_GRACE_MS
from klinestore.ingest.protocol.streams import parse_stream
from klinestore.ingest.state import MarketState

QUIET = "quiet"
MISSING = "missing"


class Activity:
    """When each symbol last showed trades, by the kind of stream that showed them (monotonic s)."""

    __slots__ = ("kline_trades", "agg_trades")

    def __init__(self) -> None:
        self.kline_trades: dict[str, float] = {}
        self.agg_trades: dict[str, float] = {}

    def forget(self, symbol: str) -> None:
        self.kline_trades.pop(symbol, None)
        self.agg_trades.pop(symbol, None)


class Liveness:
    """Judges silent streams from the evidence in :class:`Activity` and the kline series."""

    def __init__(
        self,
        activity: Activity,
        state: MarketState,
        clock: ExchangeClock,
        *,
        timeout: float,
        mark_price_timeout: float,
    ) -> None:
        self.activity = activity
        self.state = state
        self.clock = clock
        self.timeout = timeout
        self.mark_price_timeout = min(mark_price_timeout, timeout)  # never more lenient than the rest
        #: Evidence must be this much newer than a stream's last frame (frames of one moment
        #: arrive on different connections a little apart).
        self.slack = min(5.0, timeout / 4)

    def timeout_for(self, stream: str) -> float:
        """Silence (seconds) after which ``stream`` is judged at all."""
        return self.mark_price_timeout if stream.endswith("@markPrice@1s") else self.timeout

    def expects(self, stream: str, last_seen: float, now: float) -> bool:
        """Whether ``stream``, silent since ``last_seen`` (monotonic), should have delivered by ``now``."""
        name = parse_stream(stream)
        symbol, kind = name.symbol, name.kind
        after = last_seen + self.slack
        klines = self.activity.kline_trades.get(symbol, -1.0)
        if kind == "aggTrade":
            return klines > after
        traded = max(klines, self.activity.agg_trades.get(symbol, -1.0)) > after
        if kind == "depth":
            return traded
        if kind == "kline":
            return traded or self._close_overdue(symbol, name.interval or "", now - last_seen)
        return True  # markPrice ticks every second; unknown kinds keep the seed's rule

    def judge(self, stream: str, last_seen: float, now: float) -> str:
        return MISSING if self.expects(stream, last_seen, now) else QUIET

    def _close_overdue(self, symbol: str, interval: str, silent_s: float) -> bool:
        """A bar of the series should have closed, and been announced, while the stream was silent."""
        series = self.state.klines.get((symbol, interval))
        now_ms = self.clock.now_ms()
        if series is None or now_ms is None:
            return True
        ob = series.open_bar
        if ob is not None and ob.t > series.last_open_time:
            due = next_open(ob.t, interval)
        elif series.last_open_time >= 0:
            due = next_open(next_open(series.last_open_time, interval), interval)
        else:  # nothing received yet: the bar open when the silence began closes first
            due = next_open(bar_open(now_ms - int(silent_s * 1000 * self.clock.rate), interval), interval)
        grace = max(CLOSE_GRACE_MS, int(self.slack * 1000 * self.clock.rate))
        return now_ms > due + grace
