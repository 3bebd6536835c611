"""ccxt's Binance USD-M client against the simulator: the calls a futures backtest makes.

ccxt is an optional test dependency (``pip install -e '.[ccxt]'``, pinned in pyproject); the
test is skipped with that reason where it is absent. ccxt is pointed at the simulator through
its own URL keys (``urls['api']['fapiPublic']`` and the v2/v3 variants, as ccxt's binance.py
names them), so every call goes over loopback HTTP to the simulator.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from klinestore.sim import SimThread
from simfixtures import get

ccxt = pytest.importorskip("ccxt", reason="ccxt is not installed (pip install -e '.[ccxt]')")

HOUR = 3_600_000


def client(sim: SimThread):  # type: ignore[no-untyped-def]
    exchange = ccxt.binanceusdm({"enableRateLimit": False, "timeout": 15_000})
    for key in ("fapiPublic", "fapiPublicV2", "fapiPublicV3"):
        version = {"fapiPublic": "v1", "fapiPublicV2": "v2", "fapiPublicV3": "v3"}[key]
        exchange.urls["api"][key] = f"{sim.rest_url}/fapi/{version}"
    return exchange


def test_ccxt_futures_calls_succeed_against_the_simulator(sim: SimThread) -> None:
    exchange = client(sim)
    markets = exchange.load_markets()
    market = markets["BTC/USDT:USDT"]
    assert market["limits"]["cost"]["min"] == 5.0 and market["precision"]["price"] == 0.1

    history = exchange.fetch_funding_rate_history("BTC/USDT:USDT", limit=10)
    truth = get(f"{sim.rest_url}/sim/truth?symbol=BTCUSDT&kind=funding")[2]
    assert [(h["timestamp"], h["fundingRate"]) for h in history] == [(t["fundingTime"], float(t["fundingRate"])) for t in truth]

    mark = exchange.fetch_ohlcv("BTC/USDT:USDT", "1m", params={"price": "mark"}, limit=5)
    rows = get(f"{sim.rest_url}/sim/truth?symbol=BTCUSDT&kind=mark")[2]
    by_open = {r[0]: [r[0], *(float(x) for x in r[1:5])] for r in rows}
    closed = [c[:5] for c in mark if c[0] in by_open]
    assert closed and closed == [by_open[c[0]] for c in closed]

    trades = exchange.fetch_trades("BTC/USDT:USDT", limit=20)
    assert len(trades) == 20 and all(t["price"] > 0 and t["amount"] > 0 for t in trades)
    agg = {t["a"]: t for t in get(f"{sim.rest_url}/sim/truth?symbol=BTCUSDT&kind=aggTrades")[2]}
    assert all(Decimal(agg[int(t["id"])]["p"]) == Decimal(str(t["price"])) for t in trades)

    ticker = exchange.fetch_ticker("BTC/USDT:USDT")
    assert ticker["last"] > 0 and ticker["baseVolume"] > 0 and ticker["low"] <= ticker["last"] <= ticker["high"]

    index = exchange.fetch_ohlcv("BTC/USDT:USDT", "1h", params={"price": "index"}, limit=3)
    hours = {r[0]: [r[0], *(float(x) for x in r[1:5])] for r in get(f"{sim.rest_url}/sim/truth?symbol=BTCUSDT&kind=index&interval=1h")[2]}
    assert index and all(c[:5] == hours[c[0]] for c in index if c[0] in hours)
    assert exchange.fetch_open_interest("BTC/USDT:USDT")["openInterestAmount"] > 0
    assert set(exchange.fetch_tickers()) == set(exchange.fetch_funding_rates()) == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    assert set(exchange.fetch_last_prices()) == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    quote = exchange.fetch_bids_asks(["BTC/USDT:USDT"])["BTC/USDT:USDT"]
    assert quote["bid"] < quote["ask"]

    rate = exchange.fetch_funding_rate("BTC/USDT:USDT")
    assert rate["markPrice"] > 0 and rate["indexPrice"] > 0 and rate["fundingTimestamp"] % (8 * HOUR) == 0
    assert rate["fundingRate"] == float(get(f"{sim.rest_url}/fapi/v1/premiumIndex?symbol=BTCUSDT")[2]["lastFundingRate"])


def test_ccxt_pro_watches_trades_tickers_and_klines_on_the_routed_urls(sim: SimThread) -> None:
    """ccxt.pro routes ``@trade`` to ``/public`` and tickers and klines to ``/market`` (it rewrites
    its ``.../ws`` base URL per stream); each watch gets data from the simulator."""
    import asyncio

    import ccxt.pro as pro

    async def main() -> tuple:  # type: ignore[type-arg]
        exchange = pro.binanceusdm({"enableRateLimit": False})
        for key, version in (("fapiPublic", "v1"), ("fapiPublicV2", "v2"), ("fapiPublicV3", "v3")):
            exchange.urls["api"][key] = f"{sim.rest_url}/fapi/{version}"
        exchange.urls["api"]["ws"]["linear"] = sim.ws_url + "/ws"
        try:
            await exchange.load_markets()
            trades = await asyncio.wait_for(exchange.watch_trades("BTC/USDT:USDT"), 20)
            ticker = await asyncio.wait_for(exchange.watch_ticker("BTC/USDT:USDT"), 20)
            candles = await asyncio.wait_for(exchange.watch_ohlcv("BTC/USDT:USDT", "1m"), 20)
            paths = {c["path"].split("/")[1] for c in sim.connections()}
            return trades, ticker, candles, paths
        finally:
            await exchange.close()

    trades, ticker, candles, paths = asyncio.run(main())
    assert trades and all(t["price"] > 0 and t["amount"] > 0 for t in trades)
    assert ticker["last"] > 0 and ticker["baseVolume"] > 0
    assert candles and candles[-1][0] % 60_000 == 0
    assert paths == {"public", "market"}
