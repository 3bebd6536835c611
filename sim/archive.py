"""The exchange's archive host (data.binance.vision's layout) served from the simulated market.

Every complete past day (and month) of every kline interval is an archive: a zip holding
``<SYMBOL>-<iv>-<DATE>.csv`` (the futures header line, then the 12-column rows of REST
klines, corrections included: the archive is the exchange's final word) and its
``.CHECKSUM``. A day not yet over, or before the market's history, is a 404 as on the real
host. Zips are built deterministically (fixed member time), so an archive and its checksum
agree whenever they are fetched. The ``archive_corrupt`` fault makes the next zip served
differ from its checksum. aggTrades archives hold the market's aggregated trades
(``agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker``).
markPriceKlines and indexPriceKlines archives hold the mark and index klines in the kline
layout (the ``markPriceKlines`` REST rows: volumes 0, ``count`` the seconds sampled);
fundingRate archives exist only by month, as on the real host, with its header
``calc_time,funding_interval_hours,last_funding_rate`` and one row per funding event.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import datetime, timezone

from klinestore.ingest.protocol.archive import ArchiveRef, checksum_text, parse_path
from klinestore.sim.bars import rest_row
from klinestore.sim.clock import ExchangeClock
from klinestore.sim.faults import FaultState
from klinestore.ingest.protocol.http import Request, Response
from klinestore.sim.market import Market
from klinestore.sim.prices import Prices

PREFIX = "/data/"
HEADER = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
AGG_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
FUNDING_HEADER = "calc_time,funding_interval_hours,last_funding_rate"
_PRICE_KINDS = {"markPriceKlines": "mark", "indexPriceKlines": "index"}
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


class ArchiveHost:
    """``GET /data/futures/um/{daily,monthly}/{klines,aggTrades}/...`` for the simulated market."""

    def __init__(self, market: Market, clock: ExchangeClock, faults: FaultState, prices: Prices | None = None) -> None:
        self.market, self.clock, self.faults, self.prices = market, clock, faults, prices
        self.served = 0

    def handle(self, request: Request) -> Response:
        parsed = parse_path(request.path) if request.method == "GET" else None
        if parsed is None:
            return _missing(request.path)
        ref, is_checksum = parsed
        body = self.archive(ref)
        if body is None:
            return _missing(request.path)
        if is_checksum:
            return Response(200, checksum_text(hashlib.sha256(body).hexdigest(), ref.name).encode(),
                            content_type="text/plain")
        self.served += 1
        if self.faults.archive_corrupt:
            self.faults.archive_corrupt -= 1
            self.faults.applied["archive_corrupt"] += 1
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        return Response(200, body, content_type="application/zip")

    def archive(self, ref: ArchiveRef) -> bytes | None:
        """The zip of ``ref``, or None when the host would not have it (yet)."""
        price_kind = _PRICE_KINDS.get(ref.kind)
        if price_kind is not None or ref.kind == "fundingRate":
            if self.prices is None or (ref.kind == "fundingRate" and not ref.monthly):
                return None
        elif ref.kind not in ("klines", "aggTrades") or (ref.kind == "klines") != (ref.interval is not None):
            return None
        start, end = _ms(ref.day), _ms(ref.end)
        span = self.market.span(ref.symbol)
        if span is None or end > self.clock.now_ms() or start < span.first_ms or not span.holds(start):
            return None
        spec = self.market.spec(ref.symbol)
        if self.prices is not None and price_kind is not None and ref.interval is not None:
            rows = self.prices.bars(ref.symbol, price_kind, ref.interval, start, end - 1, end)
            decimals = self.prices.decimals(ref.symbol)
            lines = [HEADER] + [",".join(str(v) for v in bar.row(decimals)) for bar in rows]
        elif self.prices is not None and ref.kind == "fundingRate":
            events = self.prices.fundings(ref.symbol, start, end - 1, end)
            lines = [FUNDING_HEADER] + [f"{e.time},8,{e.body()['fundingRate']}" for e in events]
        elif ref.interval is not None:
            bars = self.market.bars(ref.symbol, ref.interval, start, end - 1, end)
            lines = [HEADER] + [",".join(str(v) for v in rest_row(bar, spec)) for bar in bars]
        else:
            lines = [AGG_HEADER]
            for chunk, lo, hi in self.market.trades(ref.symbol, start - 1, end - 1):
                t = chunk.trades
                for agg, price, qty, first, last, when, maker in zip(
                    t.agg_id[lo:hi].tolist(), t.price[lo:hi].tolist(), t.qty[lo:hi].tolist(),
                    t.first_tid[lo:hi].tolist(), t.last_tid[lo:hi].tolist(), t.time[lo:hi].tolist(),
                    t.maker[lo:hi].tolist(),
                ):
                    lines.append(f"{agg},{spec.price(price)},{spec.qty(qty)},{first},{last},{when},"
                                 f"{'true' if maker else 'false'}")
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(zipfile.ZipInfo(ref.name.removesuffix(".zip") + ".csv", _ZIP_TIME), "\n".join(lines) + "\n")
        return out.getvalue()


def _ms(day: object) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)  # type: ignore[attr-defined]


def _missing(path: str) -> Response:
    return Response(404, f"<Error><Code>NoSuchKey</Code><Key>{path}</Key></Error>".encode(), content_type="application/xml")
