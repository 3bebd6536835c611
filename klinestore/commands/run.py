"""``klinestore run``: the service (live ingest, storage, status.json) until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from klinestore.config import Config, load_config
from klinestore.core.errors import ConfigError
from klinestore.core.intervals import MINUTE_MS
from klinestore.core.options import MAX_SECONDS
from klinestore.core.symbols import check_symbols
from klinestore.core.times import iso

HELP = "run the service: live ingest into ring buffers and storage, health in status.json"
DESCRIPTION = """\
Connect to the exchange (Binance USD-M futures, or the bundled simulator with --sim), keep
klines, aggTrades, order books and mark prices live in memory, write every closed bar to
storage, and rewrite <data-dir>/status.json every jobs.status_interval seconds and once more
at exit. Scheduled jobs flush and compact storage, reconcile bars (REST in fallback mode; the
exchange's own streams in WebSocket-only mode) and order books, keep a record of every
missing bar, score each symbol (DataQual) and raise alerts; their tables (dataqual,
reconciliations, gaps, connection_events, api_calls) are published as Parquet under
<data-dir>/tables/ for other processes. Stops cleanly on SIGINT/SIGTERM or after --for
SECONDS (exit status 0).

Progress: on a terminal a live line on stderr (connections subscribed, messages/s, closed
bars stored, gaps, the lowest DataQual score); otherwise a log line every --progress seconds
(default 60). Updates rejected in bulk (e.g. stale: older than the stored bars) are logged
once per burst with their count and cause. When no connection can be opened, an ERROR line
names the URL, the error and what to check (network, proxy, --sim); the service keeps
retrying with backoff. At exit a summary on stdout: what this run received and stored, and
per symbol and interval what the data directory now holds and how many bars are missing.

--sim on a data directory that already holds bars starts the simulator's clock just after
the newest stored 1m bar (unless --sim-start is given), so a second demo continues the
first instead of being rejected as stale behind it.

Config: --config (or KLINESTORE_CONFIG, or config/websocket.json), then environment
variables (WEBSOCKET_ONLY_KLINES, DISABLE_REST_FALLBACK, KLINESTORE_DATA_DIR), then these
flags.
"""
EXAMPLES = """\
  klinestore run --sim --for 60                      # against the bundled simulator for a minute
  klinestore run --sim --for 60                      # again: the simulator continues after the stored bars
  klinestore run --sim --for 600 --progress 10 2>run.log   # a progress line every 10 s in the log
  klinestore run --sim --sim-start 2024-05-01 --sim-speed 600 --for 30
  klinestore run --symbols BTCUSDT,ETHUSDT           # Binance, default config
  klinestore run --ws-url ws://127.0.0.1:9000 --rest-url http://127.0.0.1:9001 --data-dir /tmp/ks
  klinestore run --config config/websocket.json --data-dir data
"""

log = logging.getLogger(__name__)
SUMMARY_ROWS = 20
SIM_LEAD_MS = 24 * 3_600_000
SIM_HISTORY_MINUTES = 1440
SIM_HISTORY_MAX_MINUTES = 8 * 1440  # the archive_fill job looks back at most a week  # the simulator starts this far in the past (the fast clock catches up)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="config file (JSON); default config/websocket.json")
    parser.add_argument("--data-dir", metavar="DIR", help="data directory (storage.data_dir)")
    parser.add_argument("--symbols", metavar="A,B", help="symbols to ingest, comma-separated (overrides config)")
    parser.add_argument("--ws-url", metavar="URL", help="WebSocket base URL, e.g. ws://127.0.0.1:9000")
    parser.add_argument("--rest-url", metavar="URL", help="REST base URL, e.g. http://127.0.0.1:9001")
    parser.add_argument("--sim", action="store_true", help="start the bundled exchange simulator in-process")
    parser.add_argument("--sim-speed", type=float, default=60.0, metavar="X",
                        help="simulator clock speed, exchange seconds per second (default 60)")
    parser.add_argument("--sim-seed", type=int, default=7, metavar="N", help="simulator market seed (default 7)")
    parser.add_argument("--sim-start", metavar="TIME",
                        help="simulator exchange start, ISO (UTC) or epoch ms (default: 24 h ago, so that at the "
                             "default speed the simulated market stays in the past for 24 min and exports, gap "
                             "checks and charts treat its bars as closed)")
    parser.add_argument("--gateway-port", type=int, metavar="PORT",
                        help="serve the local Binance-compatible REST and WebSocket API on this port (0: a free "
                             "one; status.json names it); sets gateway.enabled and gateway.port (docs/gateway.md)")
    parser.add_argument("--progress", type=float, default=60.0, metavar="SECONDS",
                        help="when stderr is not a terminal, log a progress line this often (default 60)")
    parser.add_argument("--for", dest="duration", type=float, metavar="SECONDS",
                        help="stop cleanly after this many seconds (default: run until SIGINT/SIGTERM)")


def build_config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    if args.data_dir:
        overrides["storage.data_dir"] = args.data_dir
    if args.symbols:
        overrides["symbols"] = list(check_symbols(args.symbols))
    if args.ws_url:
        overrides["websocket.base_url"] = args.ws_url
    if args.rest_url:
        overrides["websocket.rest_url"] = args.rest_url
    if getattr(args, "gateway_port", None) is not None:
        overrides["gateway.enabled"] = True
        overrides["gateway.port"] = args.gateway_port
    if args.sim and (args.ws_url or args.rest_url):
        raise ConfigError("--sim", "cannot be combined with --ws-url/--rest-url")
    if args.sim_start is not None and not args.sim:
        raise ConfigError("--sim-start", "needs --sim")
    if args.duration is not None and not 0 < args.duration <= MAX_SECONDS * 12:  # NaN fails both
        raise ConfigError("--for", f"must be > 0 and at most {MAX_SECONDS * 12:g} seconds (a year)")
    if not 0 < args.progress <= MAX_SECONDS:  # NaN fails both
        raise ConfigError("--progress", f"must be > 0 and at most {MAX_SECONDS:g} seconds")
    return load_config(args.config, overrides=overrides)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    if getattr(args, "verbose", 0) < 2:  # one INFO line per REST request is noise; -vv shows them
        logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(_main(config, args))
    return 0


async def _main(config: Config, args: argparse.Namespace) -> None:
    from klinestore.progress import Progress, service_sample
    from klinestore.service import Service

    async with _exchange(config, args) as config:
        service = Service(config)
        progress = Progress(service_sample(service), config.websocket.base_url, every=args.progress)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.request_stop)
        started = time.monotonic()
        progress.start()
        try:
            await service.run(args.duration)
        finally:
            await progress.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if service.store is not None:
            try:
                summary = run_summary(service, progress.watch, time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001 - the service stopped cleanly; a summary must not change that
                log.warning("no run summary: %s", exc)
            else:
                print(summary, flush=True)


@contextlib.asynccontextmanager
async def _exchange(config: Config, args: argparse.Namespace) -> AsyncIterator[Config]:
    """The config pointed at the in-process simulator (``--sim``), or unchanged."""
    if not args.sim:
        yield config
        return
    from klinestore.sim import SimConfig, Simulator
    from klinestore.sim.clock import parse_time

    newest = newest_stored_minute(config)
    if args.sim_start is not None:
        start_ms = parse_time(args.sim_start, "--sim-start")
    else:
        start_ms = (int(time.time() * 1000) - SIM_LEAD_MS) // MINUTE_MS * MINUTE_MS
        if newest is not None and newest + MINUTE_MS > start_ms:
            start_ms = newest + MINUTE_MS
            log.info("the data directory holds bars up to %s: the simulator starts after them, at %s", iso(newest),
                     iso(start_ms))
    history = sim_history_minutes(newest, start_ms)
    sim = Simulator(SimConfig(symbols=tuple(config.symbols), speed=args.sim_speed, seed=args.sim_seed, port=0,
                              start_ms=start_ms, history_minutes=history))
    await sim.start()
    try:
        log.info("simulator at %s (ws) and %s (rest, archive)", sim.ws_url, sim.rest_url)
        yield config.replace(**{"websocket.base_url": sim.ws_url, "websocket.rest_url": sim.rest_url,
                                "jobs.archive_url": sim.archive_url})
    finally:
        await sim.stop()


def sim_history_minutes(newest: int | None, start_ms: int) -> int:
    """The simulator's history before its start: a day, or back to the UTC day of the newest stored bar,
    so the days between a previous run and this one are in its REST history and on its archive host."""
    if newest is None or newest >= start_ms:
        return SIM_HISTORY_MINUTES
    day_start = newest - newest % (1440 * MINUTE_MS)
    return min(max(SIM_HISTORY_MINUTES, (start_ms - day_start) // MINUTE_MS), SIM_HISTORY_MAX_MINUTES)


def newest_stored_minute(config: Config) -> int | None:
    """Open time of the newest 1m bar of the configured symbols in the data directory (Parquet and WAL)."""
    from klinestore.storage import last_open_times

    data_dir = config.data_dir
    if not data_dir.is_dir():
        return None
    found = last_open_times(data_dir, "1m", config.symbols)
    return max(found.values()) if found else None


def run_summary(service: Any, watch: Any, seconds: float) -> str:
    """What this run received and stored, and what the data directory now holds for its symbols."""
    from klinestore.queries.inventory import inventory

    last = watch.last
    lines = [f"klinestore run: {seconds:,.0f} s, {len(service.feed.symbols)} symbols"]
    if last is not None:
        rejected = sum(last.rejected.values())
        lines[0] += (f", {last.messages:,} messages, {last.closed_bars:,} closed bars stored, "
                     f"{last.gaps} gaps detected" + (f", {rejected:,} updates rejected" if rejected else ""))
    held = [s for s in inventory(service.data_dir) if s.symbol in service.feed.symbols]
    if not held:
        lines.append(f"nothing stored in {service.data_dir} yet")
        return "\n".join(lines)
    lines.append(f"now in {service.data_dir} (klinestore list shows every series):")
    for s in held[:SUMMARY_ROWS]:
        missing = f"{s.missing:,} missing" if s.missing else "none missing"
        lines.append(f"  {s.symbol:<12} {s.interval:<4} {iso(s.first_ms)} .. {iso(s.last_ms)}  {s.bars:,} bar{'s' if s.bars != 1 else ''}, {missing}")
    if len(held) > SUMMARY_ROWS:
        lines.append(f"  ... and {len(held) - SUMMARY_ROWS} more")
    holes = sum(s.missing for s in held)
    lines.append(f"missing: {holes:,} bars between first and last stored ones" if holes
                 else "missing: no bar between the first and the last stored ones")
    return "\n".join(lines)
