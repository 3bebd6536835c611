"""The generated market: exact Binance aggregation, empty minutes, ids, determinism."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klinestore.core.intervals import MINUTE_MS, bar_close, bar_open
from klinestore.sim.bars import Bar, fold, rest_row
from klinestore.sim.generator import GeneratedSource
from klinestore.sim.listings import Listings
from klinestore.sim.market import Market

START = 1_714_521_600_000  # 2024-05-01T00:00Z
DAY = 86_400_000
INTERVALS = ("3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")


def market(seed: int = 7, symbols: tuple[str, ...] = ("BTCUSDT",), origin: int = START) -> Market:
    return Market(GeneratedSource(seed), Listings(dict.fromkeys(symbols, 1_600_000_000_000)), origin)


def reference(rows: list[list], interval: str, now: int) -> list[tuple]:  # type: ignore[type-arg]
    """Binance's aggregation of 1m rows, written independently: Decimals, no shared code."""
    buckets: dict[int, list[list]] = {}  # type: ignore[type-arg]
    for row in rows:
        buckets.setdefault(bar_open(row[0], interval), []).append(row)
    out = []
    for opened, group in sorted(buckets.items()):
        if bar_close(opened, interval) >= now:
            continue
        traded = [r for r in group if r[8] > 0]
        close = Decimal(group[-1][4])
        high = max((Decimal(r[2]) for r in traded), default=close)
        low = min((Decimal(r[3]) for r in traded), default=close)
        open_ = Decimal(traded[0][1]) if traded else close
        sums = [sum((Decimal(r[i]) for r in group), Decimal(0)) for i in (5, 7, 9, 10)]
        out.append((opened, open_, high, low, close, sums[0], bar_close(opened, interval), sums[1],
                    sum(r[8] for r in group), sums[2], sums[3]))
    return out


def numeric(row: list) -> tuple:  # type: ignore[type-arg]
    return (row[0], *(Decimal(v) for v in row[1:6]), row[6], Decimal(row[7]), row[8], Decimal(row[9]), Decimal(row[10]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    symbol=st.sampled_from(["BTCUSDT", "ETHUSDT", "DOGEUSDT", "1000PEPEUSDT", "ZZTOPUSDT", "Q9USDC"]),
    interval=st.sampled_from(INTERVALS),
    hours=st.integers(2, 30),
    offset=st.integers(0, 59),
)
def test_higher_intervals_are_binance_aggregations_of_1m(seed: int, symbol: str, interval: str, hours: int, offset: int) -> None:
    m = market(seed, (symbol,))
    now = START + hours * 3_600_000 + offset * MINUTE_MS + 12_345
    spec = m.spec(symbol)
    minutes = [rest_row(b, spec) for b in m.closed_bars(symbol, "1m", now)]
    assert [numeric(r) for r in (rest_row(b, spec) for b in m.closed_bars(symbol, interval, now))] == reference(minutes, interval, now)


def test_empty_minutes_and_all_empty_buckets_follow_binance() -> None:
    m = market(7)
    now = START + DAY
    minutes = m.closed_bars("BTCUSDT", "1m", now)
    empty = [b for b in minutes if b.trades == 0]
    assert 0.005 < len(empty) / len(minutes) < 0.04
    by_open = {b.open_time: b for b in minutes}
    for bar in empty:
        before = by_open[bar.open_time - MINUTE_MS]
        assert (bar.open, bar.high, bar.low, bar.close) == (before.close,) * 4
        assert (bar.volume, bar.quote, bar.taker_volume, bar.taker_quote, bar.first_id, bar.last_id) == (0, 0, 0, 0, -1, -1)
    # 2024-05-01T03:03 is a quiet 3-minute bucket for seed 7: an empty 3m bar at the previous close
    quiet = next(b for b in m.closed_bars("BTCUSDT", "3m", now) if b.open_time == 1_714_532_580_000)
    assert quiet.trades == 0 and quiet.open == quiet.close == by_open[quiet.open_time - MINUTE_MS].close
    assert reference([rest_row(b, m.spec("BTCUSDT")) for b in minutes], "3m", now)[61][0] == quiet.open_time


def test_fold_matches_reference_with_arbitrary_empty_minutes() -> None:
    bars = [Bar(0, 59_999, 100, 120, 90, 110, 5, 550, 2, 3, 330, 1, 2),
            Bar(60_000, 119_999, 110, 110, 110, 110, 0, 0, 0, 0, 0),
            Bar(120_000, 179_999, 105, 130, 100, 125, 4, 500, 3, 1, 125, 3, 5)]
    assert fold(bars, 0, "3m") == Bar(0, 179_999, 100, 130, 90, 125, 9, 1050, 5, 4, 455, 1, 5)
    lead_empty = [bars[1]._replace(open_time=0, close_time=59_999), bars[2]._replace(open_time=60_000, close_time=119_999)]
    assert fold(lead_empty, 0, "2h").open == 105  # the first non-empty minute opens the bucket
    all_empty = [bars[1]._replace(open_time=t, close_time=t + 59_999) for t in (0, 60_000, 120_000)]
    assert fold(all_empty, 0, "3m") == Bar(0, 179_999, 110, 110, 110, 110, 0, 0, 0, 0, 0, -1, -1)


def test_quote_volume_is_exact_and_ids_are_contiguous() -> None:
    m = market(3, ("ETHUSDT",))
    spec = m.spec("ETHUSDT")
    minutes = [b for b in m.closed_bars("ETHUSDT", "1m", START + 3 * 3_600_000) if b.trades]
    for a, b in zip(minutes, minutes[1:]):
        assert b.first_id == a.last_id + 1  # trade ids never skip, across hours too
    chunks = [m.chunk("ETHUSDT", START + h * 3_600_000) for h in range(3)]
    aggs = [int(x) for c in chunks for x in c.trades.agg_id]
    assert aggs == list(range(aggs[0], aggs[0] + len(aggs)))
    trades = chunks[0].trades
    assert int((trades.price * trades.qty).sum()) == sum(b.quote for b in minutes[:60] if b.open_time < START + 3_600_000)
    assert all(int(p) % spec.tick_units == 0 for p in trades.price)


def test_market_is_a_pure_function_of_seed_symbol_and_time() -> None:
    a, b = market(11, ("BTCUSDT", "ETHUSDT")), market(11, ("ETHUSDT", "BTCUSDT"))
    b.closed_bars("BTCUSDT", "1h", START + 5 * 3_600_000)  # build hours in another order first
    for m in (a, b):
        m.chunk("ETHUSDT", START + 7 * 3_600_000)
    now = START + 8 * 3_600_000
    assert a.closed_bars("ETHUSDT", "1m", now) == b.closed_bars("ETHUSDT", "1m", now)
    assert a.closed_bars("BTCUSDT", "15m", now) == b.closed_bars("BTCUSDT", "15m", now)
    assert market(12, ("BTCUSDT",)).closed_bars("BTCUSDT", "1h", now) != a.closed_bars("BTCUSDT", "1h", now)


def test_open_bar_grows_into_the_closed_bar() -> None:
    m = market(5)
    opened = START + 10 * MINUTE_MS
    partials = [m.bars("BTCUSDT", "5m", opened, opened, opened + ms)[0] for ms in range(250, 300_000, 7_250)]
    final = m.closed_bars("BTCUSDT", "5m", opened + 300_000)[-1]
    for a, b in zip(partials, partials[1:]):
        assert b.volume >= a.volume and b.trades >= a.trades
        if a.trades:  # before the first trade the bar sits at the previous close
            assert b.open == a.open and b.high >= a.high and b.low <= a.low
    assert partials[-1].volume <= final.volume and final.open_time == opened and final.close_time == opened + 299_999


def test_symbols_get_binance_like_specs() -> None:
    source = GeneratedSource(7)
    btc = source.spec("BTCUSDT")
    assert (btc.price_decimals, btc.tick_size, btc.step_size) == (2, "0.10", "0.001")
    assert 40_000 < source.params("BTCUSDT").base_price < 90_000
    assert source.params("DOGEUSDT").base_price < 1 and source.spec("DOGEUSDT").qty_decimals == 0
    assert source.spec("XYZUSDT").quote_asset == "USDT" and source.spec("XYZUSDT").base_asset == "XYZ"
