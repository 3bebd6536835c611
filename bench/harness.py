"""The benchmark record and small timing helpers."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure beside its baseline from the same run.

    ``better`` says which way is good; ``ratio`` is value/baseline (for "higher") or
    baseline/value (for "lower"), so a ratio above 1 always means klinestore is ahead.
    ``goal`` is the target from the issue, in the figure's own unit, if there is one.
    """

    area: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    better: Literal["higher", "lower"] = "higher"
    goal: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0 or self.value == 0:
            return None
        return self.value / self.baseline if self.better == "higher" else self.baseline / self.value

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def time_best(fn: Callable[[], Any], *, repeat: int = 5, number: int = 1) -> float:
    """Best wall time of ``number`` calls of ``fn`` over ``repeat`` rounds, in seconds per call."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def measure(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call and its result."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved(candidates: dict[str, Callable[[], Any]], *, rounds: int) -> dict[str, float]:
    """Best wall time of each candidate, in seconds, taking turns: every round runs each once.

    Fair under a shared machine's drifting load: a figure and its baselines get the same
    number of tries, spread over the same stretch of time.
    """
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(rounds):
        for name, fn in candidates.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


# --- subprocesses (the simulator, a service, a bare receiver) -------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def subprocess_env() -> dict[str, str]:
    """The environment of a benchmark's child process (``bench`` importable from it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_json_process(argv: list[str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start ``argv`` and read its first stdout line as JSON (the simulator prints its URLs)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=subprocess_env(), cwd=ROOT)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def stop_process(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def synthetic_bars(symbols: int, count: int, *, interval: str, step_ms: int, t0: int, seed: int, source: str) -> pl.DataFrame:
    """Binance-shaped bars of ``symbols`` symbols (``S000USDT``...), ``count`` each from ``t0``:
    a random walk with 2-place prices, 3-place volumes and 5-place quote volumes."""
    rng = np.random.default_rng(seed)
    n = symbols * count
    open_time = np.tile(t0 + np.arange(count, dtype=np.int64) * step_ms, symbols)
    price = np.round(100 + np.cumsum(rng.normal(0, 0.05, n)), 2)
    volume = np.round(rng.random(n) * 50, 3)
    return pl.DataFrame({
        "symbol": np.repeat([f"S{i:03d}USDT" for i in range(symbols)], count), "interval": interval,
        "open_time": open_time, "close_time": open_time + step_ms - 1, "open": price, "high": np.round(price + 0.3, 2),
        "low": np.round(price - 0.3, 2), "close": price, "volume": volume, "quote_volume": np.round(volume * price, 5),
        "trades": rng.integers(1, 500, n), "taker_buy_volume": np.round(volume / 2, 3),
        "taker_buy_quote_volume": np.round(volume * price / 2, 5), "is_complete": True, "source": source,
    })
