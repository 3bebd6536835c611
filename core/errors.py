"""The exception root shared by every klinestore package.

Tree::

    KlinestoreError
    ├── ConfigError            bad or unknown configuration key (names the key)
    ├── InvalidSymbol          a symbol that is not a Binance symbol (never reaches a path)
    ├── InvalidInterval        an interval Binance does not publish
    ├── ingest.IngestError     see ingest/errors.py
    ├── storage.StorageError   see storage/errors.py
    ├── gateway.GatewayError   see gateway/errors.py
    └── queries.QueryError     see queries/errors.py

Each package translates third-party errors at its boundary, so callers catch one root.
"""

from __future__ import annotations


class KlinestoreError(Exception):
    """Root of every error klinestore raises on purpose."""


class ConfigError(KlinestoreError, ValueError):
    """A configuration value is unknown or invalid; ``key`` is its dotted path."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"config {key}: {message}" if key else f"config: {message}")


class InvalidSymbol(KlinestoreError, ValueError):
    """A symbol that does not look like a Binance symbol."""


class InvalidInterval(KlinestoreError, ValueError):
    """An interval that Binance does not publish."""
