"""The simulator's own configuration: one frozen value, checked once.

Exchange timers (kline updates, pings, connection age, bans) are in seconds of *exchange*
time, so a test that runs the clock at 600x shortens them all at once; ``tick`` and
``close_timeout`` are real seconds because they pace the host, not the exchange.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from klinestore.core.errors import InvalidSymbol
from klinestore.core.symbols import check_symbol
from klinestore.sim.errors import SimConfigError

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MAX_SPEED = 1_000_000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ListingEvent:
    """A symbol starts trading (``list``) or stops (``delist``) at ``at_ms`` exchange time."""

    symbol: str
    at_ms: int
    action: Literal["list", "delist"] = "list"

    def __post_init__(self) -> None:
        _check_symbol_field("schedule.symbol", self.symbol)
        if self.action not in ("list", "delist"):
            raise SimConfigError("schedule.action", f"must be 'list' or 'delist', got {self.action!r}")
        if not isinstance(self.at_ms, int) or self.at_ms < 0:
            raise SimConfigError("schedule.at_ms", f"must be a non-negative integer, got {self.at_ms!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """Everything the simulator needs; defaults give a 2-symbol market at real time."""

    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    seed: int = 0
    speed: float = 1.0
    start_ms: int | None = None
    replay_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    rest_port: int = 0
    history_minutes: int = 1440
    activity: float = 1.0
    #: Symbols whose market is quiet: trades in only a few minutes an hour (their klines still
    #: close every minute), so a silent aggTrade stream is a calm market, not a broken feed.
    quiet_symbols: tuple[str, ...] = ()
    schedule: tuple[ListingEvent, ...] = ()
    kline_update_interval: float = 0.25
    ping_interval: float = 180.0
    pong_timeout: float = 600.0
    max_connection_age: float = 86_400.0
    ban_duration: float = 120.0
    max_streams_per_connection: int = 1024
    max_messages_per_second: int = 10
    weight_limit: int = 2400
    ban_after_429s: int = 5
    depth_levels: int = 1000
    tick: float = 0.02
    send_buffer_limit: int = 4 * 2**20
    close_timeout: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.symbols, tuple):
            raise SimConfigError("symbols", "must be a tuple of symbols")
        for symbol in self.symbols:
            _check_symbol_field("symbols", symbol)
        if len(set(self.symbols)) != len(self.symbols):
            raise SimConfigError("symbols", "has duplicates")
        if not self.symbols and self.replay_dir is None:
            raise SimConfigError("symbols", "needs at least one symbol (only replay mode may leave it empty)")
        _number("speed", self.speed, low=1e-3, high=MAX_SPEED)
        _integer("seed", self.seed, low=0, high=2**63 - 1)
        if self.start_ms is not None:
            _integer("start_ms", self.start_ms, low=0, high=2**45)
        if self.host not in LOOPBACK_HOSTS:
            raise SimConfigError("host", f"must be a loopback address ({', '.join(LOOPBACK_HOSTS)}), got {self.host!r}")
        _integer("port", self.port, low=0, high=65535)
        _integer("rest_port", self.rest_port, low=0, high=65535)
        _integer("history_minutes", self.history_minutes, low=0, high=366 * 1440)
        _number("activity", self.activity, low=0.05, high=100.0)
        if not isinstance(self.quiet_symbols, tuple):
            raise SimConfigError("quiet_symbols", "must be a tuple of symbols")
        for symbol in self.quiet_symbols:
            _check_symbol_field("quiet_symbols", symbol)
        for name in ("kline_update_interval", "ping_interval", "pong_timeout", "max_connection_age", "ban_duration"):
            _number(name, getattr(self, name), low=1e-3, high=1e9)
        _integer("max_streams_per_connection", self.max_streams_per_connection, low=1, high=100_000)
        _integer("max_messages_per_second", self.max_messages_per_second, low=1, high=100_000)
        _integer("weight_limit", self.weight_limit, low=1, high=10**9)
        _integer("ban_after_429s", self.ban_after_429s, low=0, high=10**6)
        _integer("depth_levels", self.depth_levels, low=5, high=5000)
        _number("tick", self.tick, low=0.001, high=1.0)
        _integer("send_buffer_limit", self.send_buffer_limit, low=2**12, high=2**31)
        _number("close_timeout", self.close_timeout, low=0.01, high=60.0)
        if not isinstance(self.schedule, tuple) or not all(isinstance(e, ListingEvent) for e in self.schedule):
            raise SimConfigError("schedule", "must be a tuple of ListingEvent")

    def replace(self, **changes: Any) -> SimConfig:
        """A copy with some options changed, checked again."""
        return dataclasses.replace(self, **changes)


def _check_symbol_field(option: str, symbol: object) -> None:
    try:
        canonical = check_symbol(symbol)
    except InvalidSymbol as exc:
        raise SimConfigError(option, str(exc)) from None
    if canonical != symbol:
        raise SimConfigError(option, f"symbols must be uppercase, got {symbol!r}")


def _number(option: str, value: object, *, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise SimConfigError(option, f"must be a number between {low:g} and {high:g}, got {value!r}")


def _integer(option: str, value: object, *, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SimConfigError(option, f"must be an integer between {low} and {high}, got {value!r}")
