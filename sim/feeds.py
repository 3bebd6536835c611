"""Price, trade and ticker streams, and the one table of what the simulator serves.

``make_channel`` is the single answer to "does the simulator feed this stream": a name whose
kind (and contract type) has a channel here is served; any other name is refused by
SUBSCRIBE with code 2 (``control.acknowledged``), whatever Binance would have said, so a test
learns at once that it asked for something the simulator cannot give instead of waiting for
a staleness timeout.
"""

from __future__ import annotations

from collections.abc import Iterable

from klinestore.ingest.protocol.streams import StreamName
from klinestore.sim import encode
from klinestore.sim.channels import (
    AggTradeChannel,
    BookTickerChannel,
    Channel,
    Context,
    DepthChannel,
    KlineChannel,
)
from klinestore.sim.instruments import SymbolSpec
from klinestore.sim.tickers import mini_payload, ticker_payload


class MarkPriceChannel(Channel):
    """``@markPrice`` (3 s) and ``@markPrice@1s``: the reading of :class:`Prices` at each push;
    ``!markPrice@arr[@1s]``: the readings of every trading symbol, as one array.

    No push is skipped, even when a pump tick spans several periods at high speed: a client
    builds mark-price bars from these updates, and Binance's rule needs every second.
    """

    def __init__(self, ctx: Context, stream: StreamName, now: int) -> None:
        super().__init__(ctx, stream, now)
        self.period = 1000 if stream.speed == "1s" else 3000
        self.last = now // self.period * self.period
        self.next_due = self.last + self.period

    def produce(self, now: int) -> list[bytes]:
        b = now // self.period * self.period
        if b <= self.last:
            return []
        pushes = range(self.last + self.period, b + 1, self.period)
        self.last, self.next_due = b, b + self.period
        if self.symbol and self.dormant(now):
            return []
        return [frame for t in pushes if (frame := self._frame(t)) is not None]

    def _frame(self, t: int) -> bytes | None:
        market, prices = self.ctx.market, self.ctx.prices
        if not self.symbol:
            updates = [encode.mark_price(s, prices.state(s, t)) for s in market.listings.visible(t) if market.trading(s, t)]
            return b"[" + b",".join(updates) + b"]" if updates else None
        return encode.mark_price(self.symbol, prices.state(self.symbol, t)) if market.trading(self.symbol, t) else None


def split_fills(qty: int, step: int, fills: int) -> list[int]:
    """An aggregated trade's quantity over its ``fills`` trades, in whole lots, earliest larger.

    Generated trades hold at least a lot per fill; a replayed minute split into few groups
    may not, and then some fills are zero (the sum stays exact).
    """
    base, rest = divmod(qty // step, fills)
    return [(base + (1 if i < rest else 0)) * step for i in range(fills)]


class TradeChannel(AggTradeChannel):
    """``<symbol>@trade``: every fill of every aggregated trade, ids ``f..l``, one price and time."""

    def _encode(self, spec: SymbolSpec, rows: Iterable[tuple[int, int, int, int, int, int, bool]]) -> list[bytes]:
        out = []
        for _, price, qty, first, last, t, maker in rows:
            for i, part in enumerate(split_fills(qty, spec.step_units, last - first + 1)):
                out.append(encode.trade(spec, first + i, price, part, t, maker))
        return out


class _PeriodicChannel(Channel):
    """A channel that speaks on each ``period`` boundary (ms) at most once."""

    period = 1000

    def __init__(self, ctx: Context, stream: StreamName, now: int) -> None:
        super().__init__(ctx, stream, now)
        self.last = now // self.period * self.period
        self.next_due = self.last + self.period

    def _boundary(self, now: int) -> int | None:
        """The boundary reached since the last call, or None if none was."""
        b = now // self.period * self.period
        if b <= self.last:
            return None
        self.last, self.next_due = b, b + self.period
        return b


class TickerChannel(_PeriodicChannel):
    """``@ticker`` and ``@miniTicker``: the 24 h rolling window every 500 ms while it changes."""

    period = 500

    def __init__(self, ctx: Context, stream: StreamName, now: int) -> None:
        super().__init__(ctx, stream, now)
        self.mini = stream.kind == "miniTicker"
        self._sent: object = None

    def produce(self, now: int) -> list[bytes]:
        b = self._boundary(now)
        if b is None:
            return []
        market = self.ctx.market
        if self.dormant(now) or not market.trading(self.symbol, b):
            return []
        window = self.ctx.tickers.rolling(self.symbol, b)
        if window[2:] == self._sent:
            return []
        self._sent = window[2:]
        payload = (mini_payload if self.mini else ticker_payload)(b, window, market.spec(self.symbol))
        return [payload.encode()]


class AllMiniTickerChannel(_PeriodicChannel):
    """``!miniTicker@arr``: every second, the mini tickers of the symbols whose window changed."""

    period = 1000

    def __init__(self, ctx: Context, stream: StreamName, now: int) -> None:
        super().__init__(ctx, stream, now)
        self._sent: dict[str, object] = {}

    def dormant(self, now: int) -> bool:
        return False

    def produce(self, now: int) -> list[bytes]:
        b = self._boundary(now)
        if b is None:
            return []
        market = self.ctx.market
        items = []
        for symbol in market.listings.visible(b):
            if not market.trading(symbol, b):
                continue
            window = self.ctx.tickers.rolling(symbol, b)
            if self._sent.get(symbol) != window[2:]:
                self._sent[symbol] = window[2:]
                items.append(mini_payload(b, window, market.spec(symbol)))
        return [("[" + ",".join(items) + "]").encode()] if items else []


_KINDS: dict[str, type[Channel]] = {
    "kline": KlineChannel, "aggTrade": AggTradeChannel, "trade": TradeChannel, "depth": DepthChannel,
    "markPrice": MarkPriceChannel, "bookTicker": BookTickerChannel, "miniTicker": TickerChannel,
    "ticker": TickerChannel, "allMiniTicker": AllMiniTickerChannel, "allMarkPrice": MarkPriceChannel,
}


def served(stream: StreamName) -> bool:
    """True if the simulator feeds ``stream`` (quarterly continuous klines: no delivery contracts)."""
    if stream.kind == "continuousKline":
        return stream.contract_type == "perpetual"
    return stream.kind in _KINDS


def make_channel(ctx: Context, stream: StreamName, now: int) -> Channel | None:
    """The channel of a stream, or None for a stream the simulator does not serve."""
    if not served(stream):
        return None
    if stream.kind == "continuousKline":
        return KlineChannel(ctx, stream, now)
    return _KINDS[stream.kind](ctx, stream, now)
