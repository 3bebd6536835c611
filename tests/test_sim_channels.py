"""Channels without sockets: what each stream produces over any sequence of pump ticks."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klinestore.ingest.protocol.streams import parse_stream
from klinestore.sim import SimConfig, Simulator
from klinestore.sim.bars import rest_row
from klinestore.sim.feeds import make_channel

START = 1_714_521_600_000


def simulator(seed: int) -> Simulator:
    return Simulator(SimConfig(symbols=("BTCUSDT", "ETHUSDT"), seed=seed, start_ms=START))


def row(k: dict) -> list:  # type: ignore[type-arg]
    return [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"], "0"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    stream=st.sampled_from(["btcusdt@kline_1m", "ethusdt@kline_3m", "btcusdt@kline_15m", "ethusdt@kline_1h",
                            "btcusdt_perpetual@continuousKline_5m"]),
    steps=st.lists(st.integers(1, 400_000), min_size=3, max_size=40),
)
def test_kline_stream_at_any_tick_pattern(seed: int, stream: str, steps: list[int]) -> None:
    sim = simulator(seed)
    name = parse_stream(stream)
    channel = make_channel(sim.hub.ctx, name, START + 1)
    assert channel is not None
    market, spec = sim.market, sim.market.spec(name.symbol)
    now, seen_closed = START + 1, []
    for step in steps:
        now += step
        for payload in channel.produce(now):
            event = json.loads(payload)
            k = event["k"]
            if "ps" in event:
                assert (event["e"], event["ps"], event["ct"]) == ("continuous_kline", name.symbol, "PERPETUAL")
            if k["x"]:
                assert event["E"] == k["T"] + 1 <= now
                seen_closed.append(k["t"])
                expected = market.bucket(name.symbol, name.interval, k["t"], k["T"] + 1)
            else:
                assert event["E"] <= now and k["t"] <= event["E"] <= k["T"]
                assert not seen_closed or k["t"] > seen_closed[-1]  # never an update of a closed bar
                expected = market.bucket(name.symbol, name.interval, k["t"], event["E"])
            assert expected is not None and row(k) == rest_row(expected, spec)
    # every bar that closed while the stream ran was closed exactly once, in order
    assert seen_closed == [b.open_time for b in market.closed_bars(name.symbol, name.interval, now) if b.close_time > START]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), steps=st.lists(st.integers(1, 30_000), min_size=2, max_size=40))
def test_agg_trades_are_every_trade_once(seed: int, steps: list[int]) -> None:
    sim = simulator(seed)
    channel = make_channel(sim.hub.ctx, parse_stream("ethusdt@aggTrade"), START)
    assert channel is not None
    now, ids = START, []
    for step in steps:
        now += step
        ids += [json.loads(p)["a"] for p in channel.produce(now)]
    expected = [int(a) for chunk, lo, hi in sim.market.trades("ETHUSDT", START, now) for a in chunk.trades.agg_id[lo:hi]]
    assert ids == expected


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), order=st.permutations(list(range(6))), cache=st.integers(1, 3))
def test_bars_do_not_depend_on_build_order_or_cache(seed: int, order: list[int], cache: int) -> None:
    a, b = simulator(seed), simulator(seed)
    b.market._cache_hours = cache  # evict and rebuild constantly
    for hour in order:
        b.market.chunk("BTCUSDT", START + hour * 3_600_000)
    now = START + 6 * 3_600_000
    assert a.market.closed_bars("BTCUSDT", "1m", now) == b.market.closed_bars("BTCUSDT", "1m", now)
