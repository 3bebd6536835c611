"""Shared fixtures: the real Binance recordings in ../shared/data and temporary data dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["simfixtures"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KLINESTORE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False, help="run soak tests at full length")


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    """True under ``pytest --long``: soak tests run minutes instead of seconds."""
    return bool(request.config.getoption("--long"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real Binance files); tests that need it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real Binance data not found at {SHARED_DATA} (set KLINESTORE_SHARED_DATA)")
    return SHARED_DATA

