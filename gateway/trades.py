"""``/fapi/v1/aggTrades`` from the stored aggTrades (``storage.persist_aggtrades``).

The stored trades (``agg_trades`` dataset) merged with the ones not yet flushed
(``MarkSeriesOut.recent``), chosen by the exchange's rules, as the simulator chooses them:
``fromId`` gives the first ``limit`` trades from that id; ``startTime`` the first ``limit``
from that time; neither the last ``limit``; never after ``endTime`` (or now); ``startTime``
and ``endTime`` more than an hour apart are refused (``-1127``). Objects are the exchange's
(``a p q f l T m``, price and quantity at the symbol's decimals). Ids rise with time, so
when the unflushed trades reach back far enough, the store is not read at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from klinestore.gateway.rest import GatewayRest, not_ingested
from klinestore.gateway.series import not_kept
from klinestore.ingest.markbars import MarkSeriesOut
from klinestore.ingest.protocol import params
from klinestore.ingest.protocol.http import Request
from klinestore.ingest.protocol.rest import AGG_TRADES_DEFAULT_LIMIT, AGG_TRADES_MAX_LIMIT, AGG_TRADES_PATH
from klinestore.storage import read_agg_trades

Trade = tuple[int, float, float, int, int, int, bool]  # a, p, q, f, l, T, m


class TradeRoutes:
    """The endpoint over one service's stored aggTrades (see the module docstring)."""

    def __init__(self, rest: GatewayRest, out: MarkSeriesOut | None, data_dir: Path | str, *, symbols: Any,
                 trade_stream: bool) -> None:
        self.rest = rest
        self.out = out
        self.data_dir = data_dir
        self._symbols = symbols
        kept = out is not None and "agg_trades" in out.sinks
        self._why = ("storage.persist_aggtrades is off, so the service keeps no aggTrades" if not kept else
                     "websocket.streams.aggtrade is off, so the service receives no aggTrades" if not trade_stream
                     else "")
        self.store_reads = 0  # answers that needed the store (the rest came from the unflushed trades)

    def install(self) -> None:
        self.rest.add_route(AGG_TRADES_PATH, self._agg_trades)

    def _agg_trades(self, request: Request, now: int) -> list[dict[str, Any]]:
        if self._why:
            raise not_kept(AGG_TRADES_PATH, self._why)
        assert self.out is not None
        symbol = self.rest.symbol_param(request, "symbol")
        if symbol not in self._symbols:
            raise not_ingested(f"the aggTrades of {symbol}")
        limit, from_id, start, end = params.agg_trades_query(request, AGG_TRADES_DEFAULT_LIMIT, AGG_TRADES_MAX_LIMIT)
        upto = now if end is None else min(end, now)
        recent = [(t.agg_trade_id, t.price, t.quantity, t.first_trade_id, t.last_trade_id, t.transact_time,
                   t.is_buyer_maker) for t in self.out.recent.rows("agg_trades", symbol)]
        if from_id is not None:
            rows = self._merged(symbol, recent, not recent or recent[0][0] > from_id,
                                dict(end_ms=upto + 1, from_id=from_id, limit=limit))
            rows = [r for r in rows if r[0] >= from_id and r[5] <= upto][:limit]
        elif start is not None:
            rows = self._merged(symbol, recent, not recent or recent[0][5] >= start,
                                dict(start_ms=start, end_ms=upto + 1, limit=limit))
            rows = [r for r in rows if start <= r[5] <= upto][:limit]
        else:
            newest = [r for r in recent if r[5] <= upto]
            rows = self._merged(symbol, recent, len(newest) < limit, dict(end_ms=upto + 1, limit=limit, newest=True))
            rows = [r for r in rows if r[5] <= upto][-limit:]
        d = self.rest.decimals(symbol)
        return [{"a": a, "p": f"{p:.{d.price}f}", "q": f"{q:.{d.qty}f}", "f": f, "l": last, "T": t, "m": m}
                for a, p, q, f, last, t, m in rows]

    def _merged(self, symbol: str, recent: list[Trade], read_store: bool, query: dict[str, Any]) -> list[Trade]:
        """The unflushed trades, and the stored ones when they may hold part of the answer, by id."""
        if not read_store:
            return recent
        self.store_reads += 1
        frame = read_agg_trades(self.data_dir, symbol, **query)
        frame = frame.with_columns(pl.col("transact_time").dt.epoch("ms"))
        by_id: dict[int, Trade] = {row[0]: row for row in frame.select(_COLUMNS).rows()}
        by_id.update((row[0], row) for row in recent)
        return [by_id[a] for a in sorted(by_id)]


_COLUMNS = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time", "is_buyer_maker")
