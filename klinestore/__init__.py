"""klinestore: Binance USD-M futures klines kept live, durable and queryable.

One import package, in layers that import one way (docs/architecture.md):
``klinestore.core`` (the shared vocabulary) < ``klinestore.storage`` (every byte on disk) <
``klinestore.ingest`` and ``klinestore.queries`` < ``klinestore.jobs``; ``klinestore.sim`` is
the exchange simulator. This package itself is the application (CLI, service, config) and
nothing below imports it, so the names here load on first use: importing a layer never
pulls in the application.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from klinestore.config import Config, load_config
    from klinestore.core.errors import ConfigError, InvalidInterval, InvalidSymbol, KlinestoreError

_LAZY = {
    "Config": "klinestore.config", "load_config": "klinestore.config",
    "ConfigError": "klinestore.core.errors", "InvalidInterval": "klinestore.core.errors",
    "InvalidSymbol": "klinestore.core.errors", "KlinestoreError": "klinestore.core.errors",
}

__all__ = ["Config", "ConfigError", "InvalidInterval", "InvalidSymbol", "KlinestoreError", "__version__", "load_config"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'klinestore' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
