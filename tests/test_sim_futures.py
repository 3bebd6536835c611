"""Futures market data over REST (funding, mark/index klines, aggTrades, tickers, open interest),
its ground truth, and the consistency of both with the streams, as an outside client sees them."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from klinestore.ingest.protocol.errors import ProtocolError
from klinestore.ingest.protocol.rest import decode_agg_trades, decode_funding_rates, decode_klines, decode_premium_index
from klinestore.sim import SimThread
from simfixtures import START_MS, SimFactory, frames, get

HOUR = 3_600_000
RECORDED_INFO = Path(__file__).resolve().parents[2] / "shared" / "data" / "um" / "rest" / "cryptofeed-usdm-2021-07-22.exchangeinfo.txt"


def rest(sim: SimThread, path: str, **params: object) -> tuple[int, dict[str, str], object]:
    return get(f"{sim.rest_url}{path}?{urllib.parse.urlencode(params)}")


def truth(sim: SimThread, kind: str, **params: object) -> list:  # type: ignore[type-arg]
    status, _, body = get(f"{sim.rest_url}/sim/truth?{urllib.parse.urlencode({'symbol': 'BTCUSDT', 'kind': kind, **params})}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


@pytest.fixture
def slow_sim(sim_factory: SimFactory) -> SimThread:
    """Speed 1: the weight minute does not roll over during a test."""
    return sim_factory(symbols=("BTCUSDT", "ETHUSDT"), speed=1, seed=7, start_ms=START_MS)


def test_weights_of_every_endpoint(slow_sim: SimThread) -> None:
    expected = [
        ("/fapi/v1/fundingRate", {"symbol": "BTCUSDT"}, 1), ("/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"}, 1),
        ("/fapi/v1/premiumIndex", {}, 10), ("/fapi/v1/markPriceKlines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 99}, 1),
        ("/fapi/v1/indexPriceKlines", {"pair": "BTCUSDT", "interval": "1m"}, 5),  # default limit 500
        ("/fapi/v1/markPriceKlines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1500}, 10),
        ("/fapi/v1/aggTrades", {"symbol": "BTCUSDT"}, 20), ("/fapi/v1/ticker/24hr", {"symbol": "BTCUSDT"}, 1),
        ("/fapi/v1/ticker/24hr", {}, 40), ("/fapi/v1/ticker/price", {"symbol": "BTCUSDT"}, 1),
        ("/fapi/v1/ticker/price", {}, 2), ("/fapi/v1/ticker/bookTicker", {"symbol": "BTCUSDT"}, 2),
        ("/fapi/v1/ticker/bookTicker", {}, 5), ("/fapi/v1/openInterest", {"symbol": "BTCUSDT"}, 1),
    ]
    used = int(rest(slow_sim, "/fapi/v1/ping")[1]["X-MBX-USED-WEIGHT-1M"])
    for path, params, weight in expected:
        status, headers, body = rest(slow_sim, path, **params)
        assert status == 200, (path, body)
        now_used = int(headers["X-MBX-USED-WEIGHT-1M"])
        assert now_used - used == weight, (path, params)
        used = now_used
        if path.endswith(("ticker/24hr", "ticker/price", "bookTicker", "premiumIndex")):
            assert isinstance(body, dict if params else list)
            if not params:
                assert sorted(item["symbol"] for item in body) == ["BTCUSDT", "ETHUSDT"]


def test_bodies_and_errors(sim: SimThread) -> None:
    status, _, body = rest(sim, "/fapi/v1/premiumIndex", symbol="BTCUSDT")
    assert list(body) == ["symbol", "markPrice", "indexPrice", "estimatedSettlePrice", "lastFundingRate",
                          "interestRate", "nextFundingTime", "time"]
    assert body["nextFundingTime"] % (8 * HOUR) == 0 and len(body["markPrice"].split(".")[1]) == 8
    status, _, body = rest(sim, "/fapi/v1/openInterest", symbol="BTCUSDT")
    assert list(body) == ["openInterest", "symbol", "time"] and Decimal(body["openInterest"]) > 0
    status, _, body = rest(sim, "/fapi/v1/ticker/bookTicker", symbol="ETHUSDT")
    assert list(body) == ["lastUpdateId", "symbol", "bidPrice", "bidQty", "askPrice", "askQty", "time"]
    book = get(f"{sim.rest_url}/sim/book?symbol=ETHUSDT&update_id={body['lastUpdateId']}")[2]
    assert [body["bidPrice"], body["bidQty"]] == book["bids"][0] and [body["askPrice"], body["askQty"]] == book["asks"][0]
    errors = [
        (rest(sim, "/fapi/v1/indexPriceKlines", symbol="BTCUSDT", interval="1m"), -1102),  # index klines take pair
        (rest(sim, "/fapi/v1/markPriceKlines", symbol="BTCUSDT", interval="7m"), -1120),
        (rest(sim, "/fapi/v1/fundingRate", symbol="BTCUSDT", limit=1001), -1130),
        (rest(sim, "/fapi/v1/openInterest", symbol="NOPEUSDT"), -1121),
        (rest(sim, "/fapi/v1/aggTrades", symbol="BTCUSDT", startTime=START_MS - 2 * HOUR, endTime=START_MS), -1127),
        (rest(sim, "/fapi/v1/aggTrades", symbol="BTCUSDT", fromId="x"), -1100),
    ]
    for (status, _, body), code in errors:
        assert status == 400 and body["code"] == code, body
    assert get(f"{sim.rest_url}/sim/truth?symbol=BTCUSDT&kind=trades")[0] == 400


def test_agg_trades_match_truth(sim: SimThread) -> None:
    trades = truth(sim, "aggTrades")
    assert [t["a"] for t in trades] == list(range(trades[0]["a"], trades[0]["a"] + len(trades)))  # no id gap
    assert all(b["f"] == a["l"] + 1 for a, b in zip(trades, trades[1:]))
    assert list(trades[0]) == ["a", "p", "q", "f", "l", "T", "m"]
    assert rest(sim, "/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=trades[100]["a"], limit=3)[2] == trades[100:103]
    t0 = trades[500]["T"]
    window = [t for t in trades if t0 <= t["T"] <= t0 + 600_000][:20]
    assert rest(sim, "/fapi/v1/aggTrades", symbol="BTCUSDT", startTime=t0, endTime=t0 + 600_000, limit=20)[2] == window
    tail = [t for t in trades if t["T"] <= t0][-7:]
    assert rest(sim, "/fapi/v1/aggTrades", symbol="BTCUSDT", endTime=t0, limit=7)[2] == tail


def test_ticker_is_the_24h_window_of_the_trades(sim: SimThread) -> None:
    _, _, ticker = rest(sim, "/fapi/v1/ticker/24hr", symbol="BTCUSDT")
    trades = [t for t in truth(sim, "aggTrades") if ticker["openTime"] < t["T"] <= ticker["closeTime"]]
    prices = [Decimal(t["p"]) for t in trades]
    assert Decimal(ticker["volume"]) == sum(Decimal(t["q"]) for t in trades)
    assert ticker["count"] == sum(t["l"] - t["f"] + 1 for t in trades) == ticker["lastId"] - ticker["firstId"] + 1
    assert (Decimal(ticker["openPrice"]), Decimal(ticker["lastPrice"])) == (prices[0], prices[-1])
    assert (Decimal(ticker["highPrice"]), Decimal(ticker["lowPrice"])) == (max(prices), min(prices))
    assert ticker["firstId"] == trades[0]["f"] and ticker["lastId"] == trades[-1]["l"]
    _, _, price = rest(sim, "/fapi/v1/ticker/price", symbol="BTCUSDT")
    before = [t for t in truth(sim, "aggTrades") if t["T"] <= price["time"]]
    assert price["price"] == before[-1]["p"]


def test_mark_and_index_klines_equal_truth(sim: SimThread) -> None:
    marks = truth(sim, "mark")
    assert marks and all(row[8] == 60 and row[6] == row[0] + 59_999 for row in marks)  # every second sampled
    first = marks[-30][0]
    rows = rest(sim, "/fapi/v1/markPriceKlines", symbol="BTCUSDT", interval="1m", startTime=first, limit=5)[2]
    assert rows == marks[-30:-25]
    hours = truth(sim, "index", interval="1h")
    minutes = [r for r in truth(sim, "index") if hours[-1][0] <= r[0] <= hours[-1][6]]
    assert len(minutes) == 60 and hours[-1][8] == 3600
    assert hours[-1][1:5] == [minutes[0][1], max((r[2] for r in minutes), key=Decimal),
                              min((r[3] for r in minutes), key=Decimal), minutes[-1][4]]
    rows = rest(sim, "/fapi/v1/indexPriceKlines", pair="BTCUSDT", interval="1h", endTime=hours[-1][0], limit=2)[2]
    assert rows == hours[-2:]
    low, high = Decimal(marks[-1][3]), Decimal(marks[-1][2])
    index = [r for r in truth(sim, "index") if r[0] == marks[-1][0]][0]
    assert abs(low - Decimal(index[3])) <= Decimal(index[3]) * Decimal("0.0006") and low <= high  # premium ±0.05 %


def test_funding_every_8h_agrees_with_the_mark_price_stream(sim_factory: SimFactory) -> None:
    funding_at = START_MS + 8 * HOUR  # 2024-05-01T08:00Z
    sim = sim_factory(symbols=("BTCUSDT",), speed=20, seed=7, start_ms=funding_at - 4_000)

    async def listen() -> list:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream?streams=btcusdt@markPrice@1s") as ws:
            return await frames(ws, 5.0, stop=lambda got: got[-1]["data"]["E"] >= funding_at + 2_000)

    got = [f["data"] for f in asyncio.run(listen())]
    events = rest(sim, "/fapi/v1/fundingRate", symbol="BTCUSDT", limit=1000)[2]
    assert events == truth(sim, "funding") and [e["fundingTime"] % (8 * HOUR) for e in events] == [0] * len(events)
    assert events[-1]["fundingTime"] == funding_at and list(events[-1]) == ["symbol", "fundingRate", "fundingTime", "markPrice"]
    before = [d for d in got if d["E"] < funding_at]
    after = [d for d in got if d["E"] >= funding_at]
    assert before and after
    assert all(d["T"] == funding_at and d["r"] == events[-1]["fundingRate"] for d in before)
    assert all(d["T"] == funding_at + 8 * HOUR for d in after)
    at = [d for d in after if d["E"] == funding_at]
    assert len(at) == 1 and at[0]["p"] == events[-1]["markPrice"]  # the event's mark: the update at F
    assert [d["E"] for d in got] == list(range(got[0]["E"], got[-1]["E"] + 1, 1000))  # no second skipped
    marks = {r[0]: r for r in truth(sim, "mark")}
    for d in got:  # every pushed mark lies inside its minute's mark kline
        row = marks.get(d["E"] // 60_000 * 60_000)
        if row is not None:
            assert Decimal(row[3]) <= Decimal(d["p"]) <= Decimal(row[2])
            if d["E"] % 60_000 == 0:
                assert d["p"] == row[1]
    premium = rest(sim, "/fapi/v1/premiumIndex", symbol="BTCUSDT")[2]
    assert premium["lastFundingRate"] == rest(sim, "/fapi/v1/premiumIndex", symbol="BTCUSDT")[2]["lastFundingRate"]
    assert premium["nextFundingTime"] == funding_at + 8 * HOUR


@pytest.mark.skipif(not RECORDED_INFO.exists(), reason="../shared/data (recorded exchangeInfo) is absent")
def test_exchange_info_has_the_recorded_layout(sim: SimThread) -> None:
    text = RECORDED_INFO.read_text()
    recorded = json.loads(text[text.index("{"): text.rindex("\nconfiguration:")])
    real = next(s for s in recorded["symbols"] if s["symbol"] == "BTCUSDT")
    ours = get(f"{sim.rest_url}/fapi/v1/exchangeInfo")[2]
    assert list(ours) == list(recorded)
    mine = next(s for s in ours["symbols"] if s["symbol"] == "BTCUSDT")
    assert list(mine) == list(real)
    assert [(f["filterType"], list(f)) for f in mine["filters"]] == [(f["filterType"], list(f)) for f in real["filters"]]
    by_type = {f["filterType"]: f for f in mine["filters"]}
    assert by_type["MIN_NOTIONAL"]["notional"] == "5" and by_type["MAX_NUM_ORDERS"]["limit"] == 200
    assert by_type["PERCENT_PRICE"]["multiplierUp"] == "1.1500" and by_type["MAX_NUM_ALGO_ORDERS"]["limit"] == 10


def test_protocol_decoders_read_the_bodies(sim_factory: SimFactory) -> None:
    """``ingest.protocol.rest`` decodes what the simulator serves (what the persistence half reads),
    and refuses a malformed body with a ProtocolError, never a traceback from deeper down."""
    sim = sim_factory(symbols=("BTCUSDT",), speed=60, seed=7, start_ms=START_MS, history_minutes=10 * 1440)
    raw = urllib.request.urlopen(f"{sim.rest_url}/fapi/v1/fundingRate?symbol=BTCUSDT&limit=1000").read()
    events = decode_funding_rates(raw)
    assert len(events) == 31 and [e.fundingTime for e in events] == [START_MS - 10 * 24 * HOUR + i * 8 * HOUR for i in range(31)]
    assert any(e.fundingRate < 0 for e in events) and all(-0.0001 <= e.fundingRate <= 0.0003 for e in events)
    assert all(e.mark_price is not None and e.mark_price > 0 for e in events)
    premium = decode_premium_index(urllib.request.urlopen(f"{sim.rest_url}/fapi/v1/premiumIndex?symbol=BTCUSDT").read())
    assert premium.nextFundingTime == START_MS + 8 * HOUR and premium.markPrice > 0
    trades = decode_agg_trades(urllib.request.urlopen(f"{sim.rest_url}/fapi/v1/aggTrades?symbol=BTCUSDT&limit=5").read())
    assert len(trades) == 5 and [t.a for t in trades] == list(range(trades[0].a, trades[0].a + 5))
    marks = decode_klines(urllib.request.urlopen(f"{sim.rest_url}/fapi/v1/markPriceKlines?symbol=BTCUSDT&interval=1h&limit=3").read())
    assert len(marks) == 3 and all(k.low <= k.open <= k.high for k in marks)
    assert decode_funding_rates(b'[{"symbol":"BTCUSDT","fundingTime":1,"fundingRate":"0.0001","markPrice":""}]')[0].mark_price is None
    with pytest.raises(ProtocolError):
        decode_funding_rates(b'[{"symbol":"BTCUSDT","fundingTime":1,"fundingRate":"abc"}]')
    with pytest.raises(ProtocolError):
        decode_funding_rates(b"{")
    with pytest.raises(ProtocolError):
        decode_agg_trades(b'[{"a":1}]')


def test_rolling_window_edges_equal_a_plain_fold() -> None:
    """The cached whole hours of a rolling window add up to the plain fold of its trades, also
    when the window starts or ends exactly on an hour or a millisecond either side of one."""
    from klinestore.sim import SimConfig
    from klinestore.sim.server import Simulator
    from klinestore.sim.tickers import _part

    sim = Simulator(SimConfig(symbols=("ETHUSDT",), seed=3, start_ms=START_MS, history_minutes=2 * 1440))
    for now in (START_MS, START_MS - 1, START_MS + 1, START_MS - 7 * HOUR + 12_345, START_MS - HOUR):
        window = sim.tickers.rolling("ETHUSDT", now)
        plain = _part(sim.market, "ETHUSDT", now - 24 * HOUR, now)
        assert plain is not None
        assert (window.open, window.high, window.low, window.last, window.last_qty, window.volume, window.quote,
                window.first_id, window.last_id, window.count) == tuple(plain[:1]) + (plain.high, plain.low, plain.last,
                plain.last_qty, plain.volume, plain.quote, plain.first_id, plain.last_id, plain.count)


def test_mark_klines_are_the_ohlc_of_the_streamed_seconds(sim: SimThread) -> None:
    """Binance's rule, checked end to end: a client that keeps every ``@markPrice@1s`` update of
    a minute rebuilds that minute's ``markPriceKlines`` row exactly (speed 60: none is skipped)."""
    async def listen() -> list:  # type: ignore[type-arg]
        async with connect(sim.ws_url + "/market/stream?streams=ethusdt@markPrice@1s") as ws:
            first = (await frames(ws, 5.0, stop=lambda got: True))[0]["data"]["E"]
            end = first // 60_000 * 60_000 + 120_000
            return await frames(ws, 10.0, stop=lambda got: got[-1]["data"]["E"] >= end)

    got = [f["data"] for f in asyncio.run(listen())]
    minute = got[-1]["E"] // 60_000 * 60_000 - 60_000
    seconds = [Decimal(d["p"]) for d in got if minute <= d["E"] < minute + 60_000]
    assert len(seconds) == 60
    row = rest(sim, "/fapi/v1/markPriceKlines", symbol="ETHUSDT", interval="1m", startTime=minute, limit=1)[2][0]
    assert [Decimal(x) for x in row[1:5]] == [seconds[0], max(seconds), min(seconds), seconds[-1]] and row[8] == 60
    assert row in get(f"{sim.rest_url}/sim/truth?symbol=ETHUSDT&kind=mark")[2]
