"""Connection events and API calls reach their tables once each, whenever the drain runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import duckdb

from klinestore.ingest.eventlog import EventLog
from klinestore.ingest.ledger import ApiLedger
from klinestore.jobs.drain import TableDrain
from klinestore.storage.tables import QualityDB, published_glob

M = 60_000
T0 = 1_714_521_600_000


def test_api_calls_are_added_as_differences_and_events_once(tmp_path: Path) -> None:
    events = EventLog(maxlen=3, now_ms=lambda: T0)
    ledger = ApiLedger()
    with QualityDB(tmp_path) as db:
        drain = TableDrain(db, events, ledger)
        ledger.record("/fapi/v1/time", 1, 0, 200)  # before the exchange clock: no minute
        ledger.record("/fapi/v1/depth", 20, T0, 200)
        events.record("market-0", "DISCONNECTED", "CONNECTING", "start")
        asyncio.run(drain.drain())
        ledger.record("/fapi/v1/depth", 2, T0, 200)  # the same minute grows
        ledger.record("/fapi/v1/depth", 2, T0 + M, 429)
        for i in range(5):  # more than the log keeps between two drains
            events.record("market-0", "CONNECTING", "CONNECTED", f"#{i}")
        asyncio.run(drain.drain())
        asyncio.run(drain.drain())  # nothing new: nothing added
        con = duckdb.connect()
        calls = con.sql(f"SELECT epoch_ms(minute), endpoint, calls, weight FROM read_parquet('{published_glob(tmp_path, 'api_calls')}') ORDER BY ALL").fetchall()
        assert calls == [(T0, "/fapi/v1/depth", 2, 22), (T0 + M, "/fapi/v1/depth", 1, 2)]
        reasons = con.sql(f"SELECT reason FROM read_parquet('{published_glob(tmp_path, 'connection_events')}') ORDER BY reason").fetchall()
        assert reasons == [("#2",), ("#3",), ("#4",), ("start",)]
        assert drain.lost_events == 2
