"""The archive downloader: at most ``parallel`` archives in flight, verified before it is kept, resumed without a request."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import date, timedelta
from pathlib import Path

import httpx

from klinestore.ingest.archives import download
from klinestore.ingest.protocol.archive import ArchiveRef, checksum_text


class Host(httpx.AsyncBaseTransport):
    """An archive host in memory that answers slowly and records how many requests overlap."""

    def __init__(self, refs: list[ArchiveRef]) -> None:
        self.files = {r.path: f"zip of {r.name}".encode() for r in refs}
        self.in_flight = self.most = self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.02)
            path = request.url.path
            if path.endswith(".CHECKSUM"):
                body = self.files[path.removesuffix(".CHECKSUM")]
                return httpx.Response(200, text=checksum_text(hashlib.sha256(body).hexdigest(), path.rsplit("/", 1)[1]))
            return httpx.Response(200, content=self.files[path])
        finally:
            self.in_flight -= 1


def test_parallel_is_a_bound_and_a_second_run_asks_nothing(tmp_path: Path) -> None:
    refs = [ArchiveRef("klines", "BTCUSDT", "1m", date(2024, 1, 1) + timedelta(days=i)) for i in range(12)]
    host = Host(refs)
    fetched = asyncio.run(download(refs, "http://archive.test", tmp_path, parallel=3, transport=host))
    assert [f.outcome for f in fetched] == ["downloaded"] * 12 and 1 < host.most <= 3
    assert (tmp_path / refs[0].path.lstrip("/")).read_bytes() == b"zip of BTCUSDT-1m-2024-01-01.zip"
    asked = host.requests
    again = asyncio.run(download(refs, "http://archive.test", tmp_path, parallel=3, transport=host))
    assert [f.outcome for f in again] == ["present"] * 12 and host.requests == asked
    assert not list(tmp_path.rglob("*.part"))
