"""The REST side as a plain HTTP client sees it: rows, weights, limits, listings, control."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse

import pytest

from klinestore.core.intervals import MINUTE_MS
from klinestore.sim import SimThread
from simfixtures import SimFactory, get, post

KLINE_WEIGHTS = [(1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10), (1500, 10)]
DEPTH_WEIGHTS = [(5, 2), (50, 2), (100, 5), (500, 10), (1000, 20)]


@pytest.fixture
def slow_sim(sim_factory: SimFactory) -> SimThread:
    """Speed 1, so a whole test runs inside one exchange minute of weight."""
    return sim_factory(speed=1, seed=7, history_minutes=3000)


def klines(sim: SimThread, **params: object) -> tuple[int, dict[str, str], object]:
    return get(f"{sim.rest_url}/fapi/v1/klines?{urllib.parse.urlencode(params)}")


def test_klines_rows_weights_and_header(slow_sim: SimThread) -> None:
    used = 0
    for limit, weight in KLINE_WEIGHTS:
        status, headers, rows = klines(slow_sim, symbol="BTCUSDT", interval="1m", limit=limit)
        used += weight
        assert status == 200 and int(headers["X-MBX-USED-WEIGHT-1M"]) == used
        assert isinstance(rows, list) and len(rows) == limit
    for limit, weight in DEPTH_WEIGHTS:
        status, headers, body = get(f"{slow_sim.rest_url}/fapi/v1/depth?symbol=ETHUSDT&limit={limit}")
        used += weight
        assert status == 200 and int(headers["X-MBX-USED-WEIGHT-1M"]) == used
        assert len(body["bids"]) == len(body["asks"]) == limit and type(body["lastUpdateId"]) is int
    for path in ("/fapi/v1/exchangeInfo", "/fapi/v1/time", "/fapi/v1/ping"):
        status, headers, _ = get(slow_sim.rest_url + path)
        used += 1
        assert status == 200 and int(headers["X-MBX-USED-WEIGHT-1M"]) == used
    status, headers, rows = klines(slow_sim, symbol="BTCUSDT", interval="1h")
    row = rows[-1]
    assert [type(v) for v in row] == [int, str, str, str, str, str, int, str, int, str, str, str] and row[11] == "0"
    assert row[6] == row[0] + 3_599_999 and row[6] >= slow_sim.now_ms()  # the open bar is included
    assert len(rows) == 51  # 50 hours of history, and the hour in progress


def test_klines_time_range_and_limit(slow_sim: SimThread) -> None:
    now = slow_sim.now_ms()
    start = now // MINUTE_MS * MINUTE_MS - 100 * MINUTE_MS + 17  # not on a bar: bars open at or after it
    _, _, rows = klines(slow_sim, symbol="ETHUSDT", interval="5m", startTime=start, limit=3)
    assert [r[0] for r in rows] == [(start // 300_000 + 1 + i) * 300_000 for i in range(3)]
    _, _, rows = klines(slow_sim, symbol="ETHUSDT", interval="1m", startTime=start - 17, endTime=start + 9 * MINUTE_MS)
    assert len(rows) == 10 and rows[0][0] == start - 17 and rows[-1][0] == start - 17 + 9 * MINUTE_MS
    _, _, rows = klines(slow_sim, symbol="ETHUSDT", interval="1m", endTime=start, limit=4)
    assert [r[0] for r in rows] == [start - 17 - i * MINUTE_MS for i in (3, 2, 1, 0)]
    truth = slow_sim.truth("ETHUSDT", "1m")
    assert truth[-10:] == klines(slow_sim, symbol="ETHUSDT", interval="1m", startTime=truth[-10][0], limit=10)[2]
    _, _, rows = klines(slow_sim, symbol="ETHUSDT", interval="1m", startTime=now + 10 * MINUTE_MS)
    assert rows == []


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("symbol=BTCUSDT&interval=1m&limit=1501", -1130),
        ("symbol=BTCUSDT&interval=1m&limit=0", -1130),
        ("symbol=BTCUSDT&interval=1m&limit=abc", -1100),
        ("symbol=NOPEUSDT&interval=1m", -1121),
        ("symbol=btc-usdt&interval=1m", -1121),
        ("interval=1m", -1102),
        ("symbol=BTCUSDT", -1102),
        ("symbol=BTCUSDT&interval=7m", -1120),
        ("symbol=BTCUSDT&interval=1m&startTime=5&endTime=4", -1023),
    ],
)
def test_kline_errors_are_binance_bodies(sim: SimThread, query: str, code: int) -> None:
    status, headers, body = get(f"{sim.rest_url}/fapi/v1/klines?{query}")
    assert status == 400 and body["code"] == code and isinstance(body["msg"], str)
    assert "X-MBX-USED-WEIGHT-1M" in headers


def test_depth_limits_and_unknown_paths(sim: SimThread) -> None:
    status, _, body = get(f"{sim.rest_url}/fapi/v1/depth?symbol=BTCUSDT&limit=7")
    assert status == 400 and body["code"] == -1130
    status, _, body = get(f"{sim.rest_url}/fapi/v1/depth?symbol=BTCUSDT")
    assert status == 200 and len(body["bids"]) == 500 and list(body) == ["lastUpdateId", "E", "T", "bids", "asks"]
    assert float(body["bids"][0][0]) < float(body["asks"][0][0])
    status, _, body = get(f"{sim.rest_url}/fapi/v1/trades")
    assert status == 404 and body["code"] == -5000


def test_429_with_retry_after_then_418(slow_sim: SimThread) -> None:
    url = urllib.parse.urlsplit(slow_sim.rest_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)  # one keep-alive connection

    def depth() -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
        conn.request("GET", "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
        response = conn.getresponse()
        return response.status, dict(response.headers), json.loads(response.read())

    statuses = [depth()[0] for _ in range(120)]  # 120 x 20 = 2400, the whole minute's weight
    assert statuses == [200] * 120
    status, headers, body = depth()
    assert status == 429 and body["code"] == -1003 and 1 <= int(headers["Retry-After"]) <= 60
    assert headers["X-MBX-USED-WEIGHT-1M"] == "2400"
    statuses = [depth()[0] for _ in range(4)]
    assert statuses == [429] * 4  # five 429s in all (ban_after_429s)
    status, headers, body = depth()  # kept going after 429s: banned
    assert status == 418 and body["code"] == -1003 and int(headers["Retry-After"]) >= 60
    assert get(f"{slow_sim.rest_url}/fapi/v1/ping")[0] == 418
    conn.close()
    assert slow_sim.ledger()["/fapi/v1/depth"] == 126 and slow_sim.ledger()["/fapi/v1/ping"] == 1


def test_ledger_counts_every_path(sim: SimThread) -> None:
    assert sim.ledger() == dict.fromkeys(
        ["/fapi/v1/klines", "/fapi/v1/depth", "/fapi/v1/exchangeInfo", "/fapi/v1/time", "/fapi/v1/ping",
         "/fapi/v1/fundingRate", "/fapi/v1/premiumIndex", "/fapi/v1/markPriceKlines", "/fapi/v1/indexPriceKlines",
         "/fapi/v1/aggTrades", "/fapi/v1/ticker/24hr", "/fapi/v1/ticker/price", "/fapi/v1/ticker/bookTicker",
         "/fapi/v1/openInterest", "/fapi/v2/ticker/price"], 0)
    get(f"{sim.rest_url}/fapi/v1/ping")
    get(f"{sim.rest_url}/fapi/v1/klines?symbol=NOPE&interval=1m")
    status, _, ledger = get(f"{sim.rest_url}/sim/ledger")
    assert status == 200 and ledger["/fapi/v1/ping"] == 1 and ledger["/fapi/v1/klines"] == 1
    assert ledger == sim.ledger() and len(ledger) == 15


def test_exchange_info_and_scheduled_listings(sim_factory: SimFactory) -> None:
    from klinestore.sim import ListingEvent

    start = 1_714_521_600_000
    sim = sim_factory(speed=60, start_ms=start, schedule=(
        ListingEvent(symbol="NEWUSDT", at_ms=start + 2 * MINUTE_MS),
        ListingEvent(symbol="ETHUSDT", at_ms=start + 2 * MINUTE_MS, action="delist"),
    ))
    status, _, info = get(f"{sim.rest_url}/fapi/v1/exchangeInfo")
    assert status == 200 and info["rateLimits"][0] == {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400}
    symbols = {s["symbol"]: s for s in info["symbols"]}
    assert set(symbols) == {"BTCUSDT", "ETHUSDT"}
    btc = symbols["BTCUSDT"]
    for key in ("symbol", "pair", "contractType", "status", "onboardDate", "deliveryDate", "pricePrecision",
                "quantityPrecision", "baseAsset", "quoteAsset"):
        assert key in btc
    assert (btc["status"], btc["contractType"], btc["pricePrecision"], btc["baseAsset"]) == ("TRADING", "PERPETUAL", 2, "BTC")
    assert klines(sim, symbol="NEWUSDT", interval="1m")[0] == 400
    while sim.now_ms() < start + 4 * MINUTE_MS:
        time.sleep(0.1)
    symbols = {s["symbol"]: s for s in get(f"{sim.rest_url}/fapi/v1/exchangeInfo")[2]["symbols"]}
    assert symbols["NEWUSDT"]["status"] == "TRADING" and symbols["NEWUSDT"]["onboardDate"] == start + 2 * MINUTE_MS
    assert symbols["ETHUSDT"]["status"] == "SETTLING"
    rows = klines(sim, symbol="NEWUSDT", interval="1m")[2]
    assert rows[0][0] == start + 2 * MINUTE_MS and rows[0][8] > 0  # trades from its first minute
    assert sim.truth("ETHUSDT", "1m")[-1][0] == start + MINUTE_MS  # no bars after the delisting
    assert post(f"{sim.rest_url}/sim/listings", {"symbol": "LATEUSDT"})[0] == 200
    assert post(f"{sim.rest_url}/sim/listings", {"symbol": "LATEUSDT"})[0] == 400  # already listed


def test_sim_endpoints_validate(sim: SimThread) -> None:
    assert get(f"{sim.rest_url}/sim/truth?symbol=BTCUSDT")[0] == 400
    assert get(f"{sim.rest_url}/sim/truth?symbol=BTCUSDT&interval=2m")[0] == 400
    assert get(f"{sim.rest_url}/sim/truth?symbol=NOPEUSDT&interval=1m")[0] == 400
    status, _, rows = get(f"{sim.rest_url}/sim/truth?symbol=BTCUSDT&interval=1h")
    assert status == 200 and all(len(r) == 12 for r in rows) and len(rows) == 24
    status, _, now = get(f"{sim.rest_url}/sim/time")
    assert status == 200 and abs(now["now"] - sim.now_ms()) < 5_000
    assert get(f"{sim.rest_url}/sim/nothing")[0] == 404
