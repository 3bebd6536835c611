"""Which symbols to ingest: new listings and delistings from exchangeInfo (seed v6.4 §11).

Pure: the feed fetches exchangeInfo, this module says what changed. The first look is the
baseline (nothing in it is "new"); later looks report perpetual contracts that became
TRADING (validated with ``check_symbol``; a bad name is skipped and counted, never a
crash) and ingested symbols that stopped trading. With sharding, a new symbol belongs to
this process only if it hashes to this shard.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from klinestore.core.errors import InvalidSymbol
from klinestore.core.symbols import check_symbol
from klinestore.ingest.protocol.rest import ExchangeInfo


def shard_of(symbol: str, num_shards: int) -> int:
    """The shard a symbol belongs to: a stable hash of its name (the same in every process)."""
    return zlib.crc32(symbol.encode()) % num_shards


@dataclass(frozen=True, slots=True)
class ListingChange:
    new: tuple[str, ...] = ()
    delisted: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()


@dataclass(slots=True)
class Listings:
    shard_id: int = 0
    num_shards: int = 1
    trading: set[str] = field(default_factory=set)  # TRADING perpetuals at the last look
    invalid: int = 0  # names refused by check_symbol, over all looks
    looks: int = 0

    def update(self, info: ExchangeInfo, ingested: set[str]) -> ListingChange:
        """Compare a new exchangeInfo with the last one and with what is ingested."""
        trading: set[str] = set()
        bad: list[str] = []
        for s in info.symbols:
            if s.status != "TRADING" or s.contractType not in ("PERPETUAL", ""):
                continue
            try:
                trading.add(check_symbol(s.symbol))
            except InvalidSymbol:
                bad.append(s.symbol)
        self.invalid += len(bad)
        first = self.looks == 0
        self.looks += 1
        previous, self.trading = self.trading, trading
        if first:
            return ListingChange(invalid=tuple(bad))
        new = sorted(
            s for s in trading - previous
            if s not in ingested and shard_of(s, self.num_shards) == self.shard_id
        )
        delisted = sorted(s for s in ingested if s in previous and s not in trading)
        return ListingChange(tuple(new), tuple(delisted), tuple(bad))

    def not_trading(self, symbols: set[str]) -> list[str]:
        """Of ``symbols``, those the last look did not find trading (empty before any look)."""
        return sorted(symbols - self.trading) if self.looks else []
