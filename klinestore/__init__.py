"""klinestore: Binance USD-M futures klines kept live, durable and queryable.

Packages: ``ingest`` (exchange connections and live state), ``storage`` (every byte on disk),
``queries`` (SQL, Python API, exports). This package holds what they share (config,
intervals, symbols, errors) and the application around them (CLI, service, simulator).
"""

from klinestore.config import Config, load_config
from klinestore.errors import ConfigError, InvalidInterval, InvalidSymbol, KlinestoreError

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "InvalidInterval", "InvalidSymbol", "KlinestoreError", "__version__", "load_config"]
