"""``klinestore sim``: run the Binance-compatible exchange simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from klinestore.core.symbols import check_symbols
from klinestore.sim.clock import parse_time
from klinestore.sim.config import LOOPBACK_HOSTS, ListingEvent, SimConfig
from klinestore.sim.errors import SimConfigError
from klinestore.sim.server import Simulator

HELP = "run the Binance-compatible exchange simulator (WebSocket + REST on loopback)"
DESCRIPTION = """\
Serve a simulated Binance USD-M futures exchange on loopback: routed WebSocket streams
(/market, /public) with SUBSCRIBE & co. and the exchange's limits, REST klines, depth,
exchangeInfo with request weights, ground truth at /sim/truth and fault injection at
POST /sim/faults. The market is generated from --seed (deterministic at any --speed) or
replayed from Binance kline archives (--replay DIR).

The first line on stdout is {"ws": "ws://127.0.0.1:PORT", "rest": "http://127.0.0.1:PORT",
"archive": "http://127.0.0.1:PORT"}; logs go to stderr. The archive URL serves the layout of
the exchange's archive host for every complete past day and month of the market
(/data/futures/um/daily/klines/<SYMBOL>/<iv>/<SYMBOL>-<iv>-<DATE>.zip and .CHECKSUM), for
`klinestore download --archive-url`; POST /sim/faults {"kind": "archive_corrupt"} makes the
next archive served mismatch its checksum. SIGINT or SIGTERM stops it (exit 0). Exchange-time options are in
seconds of exchange time (at --speed 60, --max-connection-age 600 closes each connection
after 10 real seconds).
"""
EXAMPLES = """\
  klinestore sim --port 0 --symbols BTCUSDT,ETHUSDT --speed 60 --seed 7
  klinestore sim --port 9443 --speed 1 --start 2024-05-01T00:00Z --history-minutes 4320
  klinestore sim --port 0 --speed 600 --replay ../shared/data/spot/klines/BTCUSDT/1m --start 2023-01-03
  klinestore sim --port 0 --speed 60 --list NEWUSDT@2024-05-01T00:10Z --delist ETHUSDT@2024-05-01T00:20Z --start 2024-05-01
  klinestore sim --port 0 --speed 60 --max-connection-age 600 --ping-interval 30 --pong-timeout 60
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    net = parser.add_argument_group("network")
    net.add_argument("--port", type=int, default=0, help="WebSocket port (0 picks a free one; default 0)")
    net.add_argument("--rest-port", type=int, default=None,
                     help="REST port (default: 0 with --port 0, else PORT+1)")
    net.add_argument("--host", choices=LOOPBACK_HOSTS, default="127.0.0.1", help="loopback address to bind")
    market = parser.add_argument_group("market")
    market.add_argument("--symbols", default=None,
                        help="comma-separated symbols (default BTCUSDT,ETHUSDT; with --replay: every archive symbol)")
    market.add_argument("--speed", type=float, default=1.0, help="exchange seconds per real second (60: a 1m bar a second)")
    market.add_argument("--seed", type=int, default=0, help="market seed: the same seed gives the same bars")
    market.add_argument("--start", default=None,
                        help="exchange start time, ISO (UTC) or epoch ms (default: now floored to the minute; "
                             "with --replay: the archive's first minute)")
    market.add_argument("--replay", metavar="DIR", default=None,
                        help="replay Binance 1m kline archives (SYMBOL-1m-DATE.zip or .csv) below DIR")
    market.add_argument("--history-minutes", type=int, default=1440,
                        help="minutes of history before the start served over REST (generated market; default 1440)")
    market.add_argument("--activity", type=float, default=1.0, help="trade-rate multiplier of the generated market")
    market.add_argument("--quiet-symbols", default="", metavar="A,B",
                        help="symbols whose market is quiet: trades in a few minutes an hour (klines still close "
                             "every minute)")
    market.add_argument("--depth-levels", type=int, default=1000, help="order-book levels per side (default 1000)")
    market.add_argument("--list", action="append", default=[], metavar="SYMBOL@TIME",
                        help="list a new symbol at an exchange time (repeatable)")
    market.add_argument("--delist", action="append", default=[], metavar="SYMBOL@TIME",
                        help="delist a symbol at an exchange time (repeatable)")
    timers = parser.add_argument_group("exchange timers (exchange seconds)")
    timers.add_argument("--kline-update-ms", type=int, default=250, help="kline push period (default 250)")
    timers.add_argument("--ping-interval", type=float, default=180.0, help="server ping period (default 180)")
    timers.add_argument("--pong-timeout", type=float, default=600.0, help="disconnect without pong after (default 600)")
    timers.add_argument("--max-connection-age", type=float, default=86_400.0,
                        help="close each connection after (default 86400 = 24 h)")
    timers.add_argument("--ban-seconds", type=float, default=120.0, help="first 418 ban length (default 120)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--weight-limit", type=int, default=2400, help="REQUEST_WEIGHT per minute (default 2400)")
    limits.add_argument("--max-streams", type=int, default=1024, help="streams per connection (default 1024)")


def _schedule(values: list[str], action: str) -> tuple[ListingEvent, ...]:
    events = []
    for value in values:
        symbol, at, when = value.partition("@")
        if not at or not symbol or not when:
            raise SimConfigError(f"--{action}", f"expected SYMBOL@TIME, got {value!r}")
        events.append(ListingEvent(symbol=symbol.upper(), at_ms=parse_time(when, f"--{action}"), action=action))  # type: ignore[arg-type]
    return tuple(events)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The simulator config these command-line options describe."""
    if args.symbols is not None:
        symbols = check_symbols(args.symbols)
    else:
        symbols = () if args.replay else ("BTCUSDT", "ETHUSDT")
    rest_port = args.rest_port if args.rest_port is not None else (0 if args.port == 0 else args.port + 1)
    return SimConfig(
        symbols=symbols, seed=args.seed, speed=args.speed,
        start_ms=parse_time(args.start) if args.start else None, replay_dir=args.replay,
        host=args.host, port=args.port, rest_port=rest_port, history_minutes=args.history_minutes,
        activity=args.activity, depth_levels=args.depth_levels,
        quiet_symbols=check_symbols(args.quiet_symbols) if args.quiet_symbols else (),
        schedule=_schedule(args.list, "list") + _schedule(args.delist, "delist"),
        kline_update_interval=args.kline_update_ms / 1000, ping_interval=args.ping_interval,
        pong_timeout=args.pong_timeout, max_connection_age=args.max_connection_age, ban_duration=args.ban_seconds,
        weight_limit=args.weight_limit, max_streams_per_connection=args.max_streams,
    )


async def _serve(config: SimConfig) -> None:
    sim = Simulator(config)
    await sim.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(json.dumps({"ws": sim.ws_url, "rest": sim.rest_url, "archive": sim.archive_url}), flush=True)
        await stop.wait()
    finally:
        await sim.stop()


def run(args: argparse.Namespace) -> int:
    asyncio.run(_serve(config_from_args(args)))
    return 0
