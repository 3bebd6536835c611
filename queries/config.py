"""The queries package's config section: ``metrics`` (the Prometheus endpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from klinestore.core.options import between, opt


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    enabled: bool = opt(False, "Serve Prometheus metrics.")
    host: Literal["127.0.0.1", "::1", "localhost"] = opt("127.0.0.1", "Metrics bind address (loopback only).")
    port: int = opt(9464, "Metrics port (0 picks a free one).", between(0, 65535))
