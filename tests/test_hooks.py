"""Callbacks are isolated: a failing or slow one never hurts another; drops and failures counted."""

from __future__ import annotations

import asyncio

from klinestore.ingest.hooks import Hook


def test_a_failing_callback_never_stops_the_others() -> None:
    asyncio.run(failing_callback())


async def failing_callback() -> None:
    hook = Hook("on_kline_close")
    seen: list[int] = []

    async def good(n: int) -> None:
        seen.append(n)

    async def bad(n: int) -> None:
        raise RuntimeError("user bug")

    hook.add(bad)
    hook.add(good)
    for n in range(5):
        hook.emit(n)
    assert await hook.drain()
    assert seen == [0, 1, 2, 3, 4]
    stats = hook.stats()
    assert stats[bad.__qualname__]["failures"] == 5 and stats[good.__qualname__]["failures"] == 0
    await hook.close()


def test_a_slow_callback_only_delays_itself_and_its_backlog_is_bounded() -> None:
    asyncio.run(slow_callback())


async def slow_callback() -> None:
    hook = Hook("on_kline_close", queue_size=3)
    fast_seen: list[int] = []
    release = asyncio.Event()

    async def slow(n: int) -> None:
        await release.wait()

    def fast(n: int) -> None:  # plain functions work too
        fast_seen.append(n)

    hook.add(slow)
    hook.add(fast)
    for n in range(10):
        hook.emit(n)
        await asyncio.sleep(0)
    assert fast_seen == list(range(10))
    assert hook.stats()[slow.__qualname__]["dropped"] >= 6
    release.set()
    assert await hook.drain()
    await hook.close()


def test_calls_before_the_loop_starts_wait_for_it() -> None:
    hook = Hook("on_gap")
    seen: list[str] = []
    hook.add(lambda s: seen.append(s))
    hook.emit("a")

    async def main() -> None:
        hook.start()
        await hook.drain()
        await hook.close()

    asyncio.run(main())
    assert seen == ["a"]
