"""Stable hashing and seeded random generators: the market is a pure function of its keys.

Python's ``hash`` is salted per process, so names are hashed with blake2b instead; numpy
generators are seeded from (seed, symbol, what, index) so any hour or book step can be
rebuilt alone, in any order, with the same result.
"""

from __future__ import annotations

import hashlib

import numpy as np

M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def name_hash(text: str) -> int:
    """A stable 64-bit hash of a name."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def mix(x: int) -> int:
    """splitmix64's finaliser on a Python int: a stable, well-spread 64-bit hash."""
    x = (x + _GOLDEN) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def mix_array(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over a uint64 array (wrapping arithmetic, vectorised)."""
    x = x.astype(np.uint64, copy=True)
    x += np.uint64(_GOLDEN)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def unit_floats(h: np.ndarray) -> np.ndarray:
    """Hashes to floats in (0, 1)."""
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def rng(seed: int, symbol_key: int, *keys: int) -> np.random.Generator:
    """A generator for one (seed, symbol, what, index...) cell of the market."""
    return np.random.default_rng(np.random.SeedSequence([seed & M64, symbol_key & M64, *[k & M64 for k in keys]]))
