"""Helpers for tests (importable as ``support``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def klinestore_command(*args: str) -> list[str]:
    """argv that runs the klinestore CLI of this checkout in a subprocess."""
    return [sys.executable, "-m", "klinestore", *args]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: this checkout first on the path, no user config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLINESTORE_", "WEBSOCKET_ONLY", "DISABLE_REST"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
