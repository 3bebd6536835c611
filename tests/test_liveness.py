"""Quiet or missing: silent streams judged by evidence (ingest/liveness.py), through the dispatcher."""

from __future__ import annotations

from frames import T0, agg_trade, kline
from klinestore.config import Config
from klinestore.ingest.clock import ExchangeClock
from klinestore.ingest.dispatcher import Dispatcher
from klinestore.ingest.liveness import MISSING, QUIET, Liveness
from klinestore.ingest.sink import MemorySink
from klinestore.ingest.state import MarketState

M = 60_000
STREAMS = ("btcusdt@kline_1m", "btcusdt@kline_4h", "btcusdt@aggTrade", "btcusdt@depth@500ms", "btcusdt@markPrice@1s")


class Clock(ExchangeClock):
    """An exchange clock whose now is set by the test (exchange ms), at rate 1."""

    def __init__(self) -> None:
        super().__init__(rate=1.0)
        self.now = T0

    def now_ms(self) -> int | None:
        return self.now


def make() -> tuple[Dispatcher, Liveness, Clock]:
    clock = Clock()
    state = MarketState(Config().websocket.cache, clock)
    d = Dispatcher(state, MemorySink(), clock)
    for stream in STREAMS:
        d.route(stream)
    return d, Liveness(d.activity, state, clock, timeout=60.0, mark_price_timeout=5.0), clock


def test_a_quiet_market_is_not_a_dead_stream() -> None:
    """No trades anywhere since the aggTrade and depth streams last spoke: both quiet."""
    d, live, clock = make()
    d.dispatch(agg_trade(a=1, T=T0 + 1000), 10.0)
    d.dispatch(kline(t=T0, n=5, E=T0 + 1500), 10.5)  # the trade seen in the kline too
    for i in range(1, 40):  # kline updates keep coming, trade count unchanged
        d.dispatch(kline(t=T0, n=5, E=T0 + 1500 + i * 250), 10.5 + i)
    clock.now = T0 + 50_000
    assert live.judge("btcusdt@aggTrade", 10.0, 80.0) == QUIET
    assert live.judge("btcusdt@depth@500ms", 10.0, 80.0) == QUIET


def test_trades_the_aggtrade_stream_did_not_deliver_make_it_missing() -> None:
    d, live, clock = make()
    d.dispatch(agg_trade(a=1, T=T0 + 1000), 10.0)
    d.dispatch(kline(t=T0, n=5, E=T0 + 1500), 10.5)
    d.dispatch(kline(t=T0, n=9, E=T0 + 20_000), 30.0)  # four more trades, none on the aggTrade stream
    clock.now = T0 + 50_000
    assert live.judge("btcusdt@aggTrade", 10.0, 80.0) == MISSING
    assert live.judge("btcusdt@depth@500ms", 10.0, 80.0) == MISSING  # trades took liquidity: the book moved


def test_evidence_within_the_slack_does_not_count() -> None:
    """Frames of one moment arrive on different connections a little apart."""
    d, live, clock = make()
    d.dispatch(agg_trade(a=1, T=T0 + 1000), 10.0)
    d.dispatch(kline(t=T0, n=5, E=T0 + 1500), 10.0 + live.slack / 2)
    clock.now = T0 + 50_000
    assert live.judge("btcusdt@aggTrade", 10.0, 80.0) == QUIET


def test_a_kline_stream_is_missing_once_its_bar_should_have_closed() -> None:
    """Binance closes every bar, trades or not: a silent 1m stream past its close is missing."""
    d, live, clock = make()
    d.dispatch(kline(t=T0, n=0, v=0.0, E=T0 + 1000), 10.0)
    clock.now = T0 + 59_000
    assert live.judge("btcusdt@kline_1m", 10.0, 69.0) == QUIET  # the bar is still open
    clock.now = T0 + M + 10_000
    assert live.judge("btcusdt@kline_1m", 10.0, 80.0) == MISSING
    # a 4h stream in the same quiet market is not due for hours
    d.dispatch(kline(interval="4h", t=T0, n=0, v=0.0, E=T0 + 1000), 10.0)
    assert live.judge("btcusdt@kline_4h", 10.0, 80.0) == QUIET


def test_a_kline_stream_is_missing_when_trades_happen_without_it() -> None:
    d, live, clock = make()
    d.dispatch(kline(interval="4h", t=T0, n=5, E=T0 + 1000), 10.0)
    d.dispatch(agg_trade(a=7, T=T0 + 30_000), 40.0)
    clock.now = T0 + 70_000
    assert live.judge("btcusdt@kline_4h", 10.0, 80.0) == MISSING


def test_mark_price_ticks_regardless_of_trades() -> None:
    _, live, _ = make()
    assert live.timeout_for("btcusdt@markPrice@1s") == 5.0
    assert live.timeout_for("btcusdt@aggTrade") == 60.0
    assert live.judge("btcusdt@markPrice@1s", 10.0, 16.0) == MISSING


def test_a_new_bar_with_trades_is_evidence_and_one_without_is_not() -> None:
    d, _, _ = make()
    d.dispatch(kline(t=T0, n=3, x=True), 5.0)
    assert d.activity.kline_trades["BTCUSDT"] == 5.0
    d.dispatch(kline(t=T0 + M, n=0, v=0.0), 6.0)  # a new, empty bar
    assert d.activity.kline_trades["BTCUSDT"] == 5.0
    d.dispatch(kline(t=T0 + M, n=1), 7.0)
    assert d.activity.kline_trades["BTCUSDT"] == 7.0
