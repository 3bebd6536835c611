"""Listings: the first look is the baseline; later looks report new TRADING perpetuals and delistings."""

from __future__ import annotations

from pathlib import Path

import pytest

from klinestore.ingest.listings import Listings, shard_of
from klinestore.ingest.protocol.rest import ExchangeInfo, SymbolInfo, decode_exchange_info


def info(*symbols: tuple[str, str] | tuple[str, str, str]) -> ExchangeInfo:
    return ExchangeInfo(serverTime=0, symbols=[
        SymbolInfo(symbol=s[0], status=s[1], contractType=s[2] if len(s) > 2 else "PERPETUAL") for s in symbols
    ])


def test_new_listings_and_delistings_after_the_baseline() -> None:
    listings = Listings()
    first = listings.update(info(("BTCUSDT", "TRADING"), ("ETHUSDT", "TRADING"), ("OLDUSDT", "TRADING")),
                            {"BTCUSDT", "OLDUSDT"})
    assert first.new == () and first.delisted == ()
    change = listings.update(
        info(("BTCUSDT", "TRADING"), ("ETHUSDT", "TRADING"), ("OLDUSDT", "SETTLING"), ("NEWUSDT", "TRADING"),
             ("PREUSDT", "PENDING_TRADING"), ("BTCUSDT_261225", "TRADING", "CURRENT_QUARTER"), ("bad sym", "TRADING")),
        {"BTCUSDT", "OLDUSDT"},
    )
    assert change.new == ("NEWUSDT",)  # ETHUSDT traded before: not new; quarterlies are not perpetuals
    assert change.delisted == ("OLDUSDT",)
    assert change.invalid == ("bad sym",) and listings.invalid == 1


def test_a_shard_takes_only_its_own_new_symbols() -> None:
    names = [f"NEW{i}USDT" for i in range(40)]
    takers = []
    for shard in range(4):
        listings = Listings(shard_id=shard, num_shards=4)
        listings.update(info(("BTCUSDT", "TRADING")), set())
        takers.append(set(listings.update(info(*((n, "TRADING") for n in names)), set()).new))
    assert set().union(*takers) == set(names) and sum(map(len, takers)) == 40
    assert all(shard_of(n, 4) == i for i, group in enumerate(takers) for n in group)


@pytest.mark.real_data
def test_the_recorded_exchange_info_is_a_baseline_of_trading_perpetuals(shared_data: Path) -> None:
    line = (shared_data / "um/rest/cryptofeed-usdm-2021-07-22.exchangeinfo.txt").read_text().splitlines()[0]
    listings = Listings()
    listings.update(decode_exchange_info(line.partition(": ")[2]), set())
    assert "BTCUSDT" in listings.trading and len(listings.trading) > 100
    assert listings.not_trading({"BTCUSDT", "NOPEUSDT"}) == ["NOPEUSDT"]
