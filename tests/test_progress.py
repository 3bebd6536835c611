"""The run command's watch: progress text, one ERROR per outage, one WARNING per burst of rejects."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence

from klinestore.progress import BURST, NO_ROUTE_FAILURES, Progress, Sample, Watch

URL = "wss://fstream.binance.com"


def sample(at: float, *, subscribed: int = 2, messages: int = 0, rejected: dict[str, int] | None = None,
           transitions: Sequence[tuple[str, str, str, str]] = ()) -> Sample:
    return Sample(at=at, connections=2, subscribed=subscribed, messages=messages, closed_bars=3, gaps=1,
                  rejected=rejected or {}, dataqual=0.9, transitions=transitions)


def failed(conn: str = "market-0") -> tuple[str, str, str, str]:
    return (conn, "CONNECTING", "RECONNECTING", "retry 1/10 in 1.00s: gaierror: [Errno -2] Name or service not known")


def test_the_line_shows_rates_and_counts() -> None:
    watch = Watch(URL)
    watch.observe(sample(0.0, messages=0))
    watch.observe(sample(2.0, messages=1000, rejected={"stale": 5}))
    assert watch.line() == ("connections 2/2 subscribed | 500 msg/s | 3 bars stored | 1 gaps | DataQual 0.90 "
                            "| 5 rejected")


def test_no_route_is_one_error_per_outage_and_a_lost_connection_is_not_one() -> None:
    watch = Watch(URL)
    lost = ("market-0", "SUBSCRIBED", "LOST", "connection lost (reset)")
    assert watch.observe(sample(0.0, subscribed=0, transitions=[lost] * 5)) == []
    notices = [n for i in range(NO_ROUTE_FAILURES + 3) for n in watch.observe(sample(i, subscribed=0,
                                                                                     transitions=[failed()]))]
    assert len(notices) == 1 and notices[0][0] == logging.ERROR
    assert URL in notices[0][1] and "gaierror: [Errno -2]" in notices[0][1] and "retry 1/10" not in notices[0][1]
    assert watch.observe(sample(10.0, subscribed=1)) == []  # the route is back: the next outage is told again
    again = [n for i in range(NO_ROUTE_FAILURES) for n in watch.observe(sample(11 + i, subscribed=0,
                                                                                transitions=[failed("public-1")]))]
    assert len(again) == 1 and "public-1" in again[0][1]


def test_a_burst_of_rejects_is_one_warning_with_count_and_cause_then_one_line_at_its_end() -> None:
    watch = Watch(URL)
    notices = []
    for i, count in enumerate((0, 10, BURST // 2, BURST + 10, 3 * BURST, 5 * BURST)):
        notices += watch.observe(sample(float(i), rejected={"stale": count, "duplicate": 1}))
    assert [level for level, _ in notices] == [logging.WARNING]
    assert notices[0][1].startswith(f"{BURST + 10:,} updates rejected as stale in 3 s: ")  # since the burst began
    assert "older than the newest one already held" in notices[0][1]
    end = watch.observe(sample(9.0, rejected={"stale": 5 * BURST, "duplicate": 1}))
    assert end == [(logging.INFO, f"{5 * BURST:,} updates rejected as stale in 9 s, then stopped")]
    assert watch.finish() == []


def test_a_burst_still_running_at_exit_is_closed_by_finish() -> None:
    watch = Watch(URL)
    watch.observe(sample(0.0, rejected={"stale": 0}))
    watch.observe(sample(1.0, rejected={"stale": 2 * BURST}))
    assert watch.finish() == [(logging.INFO, f"{2 * BURST:,} updates rejected as stale in 1 s, until exit")]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_line_is_redrawn_in_place_and_a_log_record_clears_it_first() -> None:
    terminal = Terminal()
    counter = iter(range(1000))

    def sampler() -> Sample:
        n = next(counter)
        return sample(float(n), messages=100 * n, rejected={"stale": 0 if n < 2 else 10 * BURST})

    async def main() -> None:
        handler = logging.StreamHandler(terminal)
        root = logging.getLogger()
        root.addHandler(handler)
        level = root.level
        root.setLevel(logging.INFO)
        try:
            progress = Progress(sampler, URL, tick=0.01, stream=terminal)
            progress.start()
            while "rejected as stale" not in terminal.getvalue() or terminal.getvalue().count("\r\x1b[K") < 6:
                await asyncio.sleep(0.01)
            await progress.stop()
        finally:
            root.removeHandler(handler)
            root.setLevel(level)

    asyncio.run(asyncio.wait_for(main(), 30))
    text = terminal.getvalue()
    assert "\r\x1b[Kconnections 2/2 subscribed |" in text
    warning = text.index("updates rejected as stale")
    assert text.rfind("\r\x1b[K", 0, warning) > text.rfind("connections", 0, warning)  # cleared before the record
    assert text.endswith("\r\x1b[K")  # the line is gone at exit
