"""Downloading archives from the exchange's archive host: verified, atomic, resumable, bounded.

Each archive is fetched with its ``.CHECKSUM``; the zip is streamed to a temporary name
while its sha256 is computed and renamed into place only when the digest matches, so a file
under its final name is always a verified one. A download interrupted at any point leaves
at most a temporary file (replaced next time); an archive already in place with a matching
checksum is not fetched again. ``parallel`` archives are in flight at once. A 404 means the
host does not have the archive (a day not over yet, a symbol not listed then): reported, not
an error. 0 REST weight: the archive host is not the API.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from klinestore.ingest.protocol.archive import CHECKSUM_SUFFIX, ArchiveRef, parse_checksum
from klinestore.ingest.protocol.errors import ArchiveError

DEFAULT_PARALLEL = 4
TIMEOUT = 60.0
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Fetched:
    """What became of one archive: ``downloaded``, ``present`` (verified earlier), ``missing`` (404)
    or ``corrupt`` (its bytes do not match its checksum; ``detail`` says how)."""

    ref: ArchiveRef
    path: Path
    outcome: str
    detail: str = ""


def local_path(dest: Path, ref: ArchiveRef) -> Path:
    return dest / ref.path.lstrip("/")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


async def download(
    refs: Sequence[ArchiveRef], base_url: str, dest: Path, *, parallel: int = DEFAULT_PARALLEL,
    progress: Callable[[Fetched], None] | None = None, transport: httpx.AsyncBaseTransport | None = None,
) -> list[Fetched]:
    """Fetch and verify ``refs`` below ``dest`` (the host's paths); one :class:`Fetched` per ref, in order."""
    gate = asyncio.Semaphore(max(1, parallel))
    base = base_url.rstrip("/")
    async with httpx.AsyncClient(timeout=TIMEOUT, transport=transport or httpx.AsyncHTTPTransport(retries=2),
                                 follow_redirects=True) as client:
        async def one(ref: ArchiveRef) -> Fetched:
            async with gate:
                fetched = await _fetch(client, base, dest, ref)
            if progress is not None:
                progress(fetched)
            return fetched

        return list(await asyncio.gather(*(one(ref) for ref in refs)))


async def _fetch(client: httpx.AsyncClient, base: str, dest: Path, ref: ArchiveRef) -> Fetched:
    target = local_path(dest, ref)
    checksum_file = target.with_name(target.name + CHECKSUM_SUFFIX)
    if target.exists() and checksum_file.exists():
        expected = parse_checksum(checksum_file.read_text(errors="replace"))
        if expected is not None and await asyncio.to_thread(sha256_of, target) == expected:
            return Fetched(ref, target, "present")
    url = base + ref.path
    try:
        answer = await client.get(url + CHECKSUM_SUFFIX)
        if answer.status_code == 404:
            return Fetched(ref, target, "missing", f"{url}: not on the archive host (404)")
        answer.raise_for_status()
        expected = parse_checksum(answer.text)
        if expected is None:
            raise ArchiveError(f"{url}{CHECKSUM_SUFFIX}: not a checksum file ({answer.text[:60]!r})")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        digest = hashlib.sha256()
        async with client.stream("GET", url) as stream:
            if stream.status_code == 404:
                return Fetched(ref, target, "missing", f"{url}: not on the archive host (404)")
            stream.raise_for_status()
            with open(tmp, "wb") as handle:
                async for block in stream.aiter_bytes(_CHUNK):
                    digest.update(block)
                    handle.write(block)
                handle.flush()
                os.fsync(handle.fileno())
    except httpx.HTTPError as exc:
        raise ArchiveError(f"{url}: {type(exc).__name__}: {exc} (check the network, a proxy, or --archive-url)") from None
    actual = digest.hexdigest()
    if actual != expected:
        tmp.unlink(missing_ok=True)
        return Fetched(ref, target, "corrupt", f"{url}: sha256 {actual} does not match its .CHECKSUM {expected}")
    os.replace(tmp, target)
    checksum_file.write_text(answer.text)
    return Fetched(ref, target, "downloaded")
