"""The Simulator as a whole: determinism across speeds and subscriptions, the Python API."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import connect

from klinestore.sim import SimConfig, SimConfigError, SimError, SimThread, Simulator
from simfixtures import SimFactory, frames

START = 1_714_521_600_000


def test_same_seed_same_truth_at_any_speed_and_subscription(sim_factory: SimFactory) -> None:
    fast = sim_factory(seed=21, speed=900, start_ms=START, symbols=("BTCUSDT", "SOLUSDT"))
    slow = sim_factory(seed=21, speed=120, start_ms=START, symbols=("SOLUSDT", "BTCUSDT"))
    other = sim_factory(seed=22, speed=900, start_ms=START, symbols=("BTCUSDT",))

    async def watch() -> None:  # subscribers on one simulator only must change nothing
        async with connect(fast.ws_url + "/market/stream?streams=btcusdt@kline_1m/btcusdt@aggTrade/solusdt@kline_5m") as ws:
            await frames(ws, 1.5)

    asyncio.run(watch())
    for interval in ("1m", "5m", "15m"):
        a, b = fast.truth("BTCUSDT", interval), slow.truth("BTCUSDT", interval)
        assert b and a[: len(b)] == b
    assert fast.truth("SOLUSDT", "1m")[:3] == slow.truth("SOLUSDT", "1m")[:3]
    assert other.truth("BTCUSDT", "1m")[:3] != fast.truth("BTCUSDT", "1m")[:3]


def test_async_api_and_context_manager() -> None:
    async def main() -> None:
        async with Simulator(SimConfig(speed=60, seed=1)) as sim:
            assert sim.ws_url.startswith("ws://127.0.0.1:") and sim.rest_url.startswith("http://127.0.0.1:")
            assert abs(sim.now_ms() - time.time() * 1000) < 120_000
            assert sim.ledger()["/fapi/v1/klines"] == 0
            assert sim.inject({"kind": "duplicate", "count": 1}) == {"injected": {"kind": "duplicate", "count": 1}}
            assert len(sim.truth("BTCUSDT", "1h")) == 24
            with pytest.raises(SimError):
                await sim.start()

    asyncio.run(main())


def test_sim_thread_lifecycle(sim_factory: SimFactory) -> None:
    sim = sim_factory(speed=60)
    assert sim.connections() == [] and sim.stats()["connections_total"] == 0
    sim.stop()
    sim.stop()  # twice is fine
    with pytest.raises(SimError):
        sim.truth("BTCUSDT", "1m")
    with pytest.raises(TypeError):
        SimThread(SimConfig(), speed=2)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"speed": 0}, "speed"),
        ({"host": "0.0.0.0"}, "host"),
        ({"symbols": ("btcusdt",)}, "symbols"),
        ({"symbols": ()}, "symbols"),
        ({"symbols": ("BTCUSDT", "BTCUSDT")}, "symbols"),
        ({"port": 70000}, "port"),
        ({"depth_levels": 2}, "depth_levels"),
    ],
)
def test_config_is_checked(options: dict, option: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(SimConfigError) as info:
        SimConfig(**options)
    assert info.value.option == option
