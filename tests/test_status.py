"""status.json: the fixed fields are there from the first write, and writes are atomic."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from klinestore.config import Config
from klinestore.ingest.feed import Feed
from klinestore.ingest.sink import MemorySink
from klinestore.ingest.status import snapshot
from klinestore.storage.status import write_status


def test_a_fresh_feed_reports_every_fixed_field(tmp_path: Path) -> None:
    feed = Feed(Config().replace(symbols=["BTCUSDT"]), MemorySink())
    data = snapshot(feed)
    asyncio.run(feed.rest.aclose())
    assert data["mode"] == "websocket_only" and data["connections"] == [] and data["missing_streams"] == {}
    assert {"messages", "rejected", "reconnects"} <= set(data["counters"]) and data["ledger"] == {}
    assert {"symbol": "BTCUSDT", "interval": "1m"} in data["warming_up"]  # no clock, no bars: all warming up
    path = tmp_path / "status.json"
    write_status(path, data)
    write_status(path, {**data, "running": True})
    assert json.loads(path.read_text())["running"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary file left behind
