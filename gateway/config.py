"""The gateway's config section: ``gateway`` (the local Binance-compatible API, docs/gateway.md)."""

from __future__ import annotations

from dataclasses import dataclass

from klinestore.core.errors import ConfigError
from klinestore.core.options import between, opt, positive

#: Bind addresses that only this machine can reach; any other bind needs ``gateway.token``.
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    enabled: bool = opt(False, "Serve the local Binance-compatible REST and WebSocket API (--gateway-port).")
    host: str = opt("127.0.0.1", "Bind address; anything but loopback requires gateway.token.")
    port: int = opt(0, "Port of REST and WebSocket alike (0 picks a free one; status.json names it).",
                    between(0, 65535))
    token: str = opt("", "Bearer token clients send (Authorization: Bearer ...); required off loopback.")
    max_clients: int = opt(256, "Open connections (REST and WebSocket) at most; more are refused.",
                           between(1, 100_000))
    max_subscriptions: int = opt(200, "Streams one WebSocket client may subscribe at most.", between(1, 1024))
    weight_limit: int = opt(2400, "Request weight per client per minute (Binance's weights); over it: 429.",
                            between(1, 10**9))
    send_buffer: int = opt(4 * 1024 * 1024, "Unsent bytes a WebSocket client may lag before it is disconnected.",
                           between(1024, 1 << 30))
    queue_frames: int = opt(100_000, "Frames waiting for fan-out at most; beyond, subscribers are disconnected.",
                            between(16, 10**8))
    ping_interval: float = opt(180.0, "Seconds between the pings sent to each WebSocket client (Binance: 3 minutes).",
                               positive)
    pong_timeout: float = opt(600.0, "A WebSocket client that sends nothing (not even a pong) this long is "
                              "disconnected (Binance: 10 minutes).", positive)
    exchange_info_refresh: float = opt(300.0, "Seconds between refreshes of the cached exchangeInfo.", positive)

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK and not self.token:
            raise ConfigError("gateway.token", f"required to bind the gateway to {self.host!r} (not loopback)")
        if self.token and (len(self.token) < 16 or not self.token.isascii() or not self.token.isprintable()
                           or " " in self.token):
            raise ConfigError("gateway.token", "must be at least 16 printable ASCII characters without spaces")
