"""Fault injection: the bodies ``POST /sim/faults`` accepts, and the state they leave behind.

Parsing is strict (unknown keys and bad values are refused with a message naming the key),
because a test that misspells ``seconds`` must fail loudly, not inject a different fault.
Durations are real seconds, like the service's liveness timers; counts are frames or
requests. Connection-wide faults (drop, reset, stall) act on the connections open at
injection; frame faults act on the next data frames sent to any connection.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from klinestore.core.errors import InvalidInterval, InvalidSymbol
from klinestore.core.intervals import check_interval
from klinestore.core.symbols import check_symbol
from klinestore.ingest.protocol.errors import ProtocolError
from klinestore.ingest.protocol.streams import parse_stream
from klinestore.sim.bars import Bar
from klinestore.sim.errors import FaultError
from klinestore.sim.instruments import SymbolSpec

MAX_SECONDS = 3600.0
MAX_COUNT = 1_000_000
DROP_CLOSE_CODE = 1001

#: kind -> (required keys, optional keys)
FAULT_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "drop": ((), ("code",)),
    "reset": ((), ()),
    "stall": (("seconds",), ()),
    "stall_stream": (("stream", "seconds"), ()),
    "malformed": ((), ("count",)),
    "duplicate": ((), ("count",)),
    "out_of_order": ((), ("count",)),
    "rest_error": ((), ("code", "count")),
    "kline_mismatch": (("symbol",), ("interval", "open_time")),
    "depth_gap": (("symbol",), ("count",)),
    "archive_corrupt": ((), ("count",)),
}
FAULT_KINDS = tuple(FAULT_KEYS)


@dataclass(frozen=True, slots=True)
class Fault:
    """A parsed fault; fields a kind does not use are None."""

    kind: str
    seconds: float | None = None
    stream: str | None = None
    count: int | None = None
    code: int | None = None
    symbol: str | None = None
    interval: str | None = None
    open_time: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_fault(body: object) -> Fault:
    """Validate a fault body; raise :class:`FaultError` with what is wrong."""
    if not isinstance(body, Mapping):
        raise FaultError("the fault must be a JSON object with a 'kind'")
    kind = body.get("kind")
    if kind not in FAULT_KEYS:
        raise FaultError(f"kind must be one of {', '.join(FAULT_KINDS)}; got {kind!r}")
    required, optional = FAULT_KEYS[kind]
    unknown = sorted(set(body) - {"kind", *required, *optional})
    if unknown:
        allowed = ", ".join((*required, *optional)) or "nothing else"
        raise FaultError(f"{kind}: unknown key {unknown[0]!r} (allowed: {allowed})")
    missing = [k for k in required if k not in body]
    if missing:
        raise FaultError(f"{kind}: missing {missing[0]!r}")
    values: dict[str, Any] = {}
    for key in (*required, *optional):
        if key in body:
            values[key] = _CHECKS[key](kind, body[key])
    if kind in ("malformed", "duplicate", "out_of_order", "rest_error", "depth_gap", "archive_corrupt"):
        values.setdefault("count", 1)
    if kind == "rest_error":
        values.setdefault("code", 500)
        if not 400 <= values["code"] <= 599:
            raise FaultError(f"rest_error: code must be an HTTP error status 400-599, got {values['code']}")
    if kind == "drop" and not _sendable_close_code(values.get("code", DROP_CLOSE_CODE)):
        raise FaultError(f"drop: code must be a close code that can be sent (1000-1014 but 1004-1006, or 3000-4999), got {values['code']}")
    return Fault(kind, **values)


def _sendable_close_code(code: int) -> bool:
    return 1000 <= code <= 1014 and code not in (1004, 1005, 1006) or 3000 <= code <= 4999


def _seconds(kind: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value <= MAX_SECONDS:
        raise FaultError(f"{kind}: seconds must be a number in (0, {MAX_SECONDS:g}] (real seconds), got {value!r}")
    return float(value)


def _count(kind: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise FaultError(f"{kind}: count must be an integer in [1, {MAX_COUNT}], got {value!r}")
    return value


def _code(kind: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultError(f"{kind}: code must be an integer, got {value!r}")
    return value


def _stream(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise FaultError(f"{kind}: stream must be a stream name like btcusdt@kline_1m, got {value!r}")
    try:
        return parse_stream(value).name
    except ProtocolError as exc:
        raise FaultError(f"{kind}: {exc}") from None


def _symbol(kind: str, value: object) -> str:
    try:
        return check_symbol(value)
    except InvalidSymbol as exc:
        raise FaultError(f"{kind}: {exc}") from None


def _interval(kind: str, value: object) -> str:
    try:
        return check_interval(value)  # type: ignore[arg-type]
    except (InvalidInterval, TypeError):
        raise FaultError(f"{kind}: unknown interval {value!r}") from None


def _open_time(kind: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FaultError(f"{kind}: open_time must be a bar's open time in ms, got {value!r}")
    return value


_CHECKS: dict[str, Callable[[str, object], Any]] = {
    "seconds": _seconds, "count": _count, "code": _code, "stream": _stream, "symbol": _symbol,
    "interval": _interval, "open_time": _open_time,
}


class FaultState:
    """Pending frame, REST and stream faults (connection faults act at once, elsewhere)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.malformed = 0
        self.duplicate = 0
        self.out_of_order = 0
        self.rest_errors: deque[list[int]] = deque()  # [code, remaining]
        self.stalled_streams: dict[str, float] = {}  # name -> real deadline
        self.mismatches: list[Fault] = []
        self.depth_gaps: dict[str, tuple[int, int]] = {}  # symbol -> (epoch, count)
        self.archive_corrupt = 0  # archives still to serve with bytes that do not match their .CHECKSUM
        self.injected: deque[dict[str, Any]] = deque(maxlen=1000)
        self.applied: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)

    def record(self, fault: Fault, exchange_ms: int) -> None:
        self.injected.append({"at": exchange_ms, **fault.to_dict()})

    # --- frames -------------------------------------------------------------------------

    @property
    def frames_pending(self) -> bool:
        return bool(self.malformed or self.duplicate or self.out_of_order)

    def transform(self, data: bytes, held: bytes | None) -> tuple[list[bytes], bytes | None]:
        """Frames to send for ``data`` and the frame a connection holds back (out_of_order)."""
        if held is not None:
            return [data, held], None
        if self.malformed:
            self.malformed -= 1
            self.applied["malformed"] += 1
            return [data[: max(1, len(data) // 2)]], None
        if self.duplicate:
            self.duplicate -= 1
            self.applied["duplicate"] += 1
            return [data, data], None
        if self.out_of_order:
            self.out_of_order -= 1
            self.applied["out_of_order"] += 1
            return [], data
        return [data], None

    # --- streams ------------------------------------------------------------------------

    def stall_stream(self, name: str, seconds: float) -> None:
        self.stalled_streams[name] = self._monotonic() + seconds

    def stream_stalled(self, name: str) -> bool:
        deadline = self.stalled_streams.get(name)
        if deadline is None:
            return False
        if self._monotonic() >= deadline:
            del self.stalled_streams[name]
            return False
        return True

    def add_depth_gap(self, symbol: str, count: int) -> None:
        epoch = self.depth_gaps.get(symbol, (0, 0))[0] + 1
        self.depth_gaps[symbol] = (epoch, count)

    # --- REST ---------------------------------------------------------------------------

    def take_rest_error(self) -> int | None:
        if not self.rest_errors:
            return None
        entry = self.rest_errors[0]
        entry[1] -= 1
        if entry[1] <= 0:
            self.rest_errors.popleft()
        self.applied["rest_error"] += 1
        return entry[0]

    def take_mismatch(self, symbol: str, interval: str) -> Fault | None:
        for i, fault in enumerate(self.mismatches):
            if fault.symbol == symbol and fault.interval in (None, interval):
                return self.mismatches.pop(i)
        return None

    def pending(self) -> dict[str, Any]:
        now = self._monotonic()
        return {
            "malformed": self.malformed,
            "duplicate": self.duplicate,
            "out_of_order": self.out_of_order,
            "rest_error": [{"code": c, "count": n} for c, n in self.rest_errors],
            "stall_stream": {k: round(v - now, 3) for k, v in self.stalled_streams.items() if v > now},
            "kline_mismatch": [f.to_dict() for f in self.mismatches],
            "depth_gap": {s: n for s, (_, n) in self.depth_gaps.items()},
            "archive_corrupt": self.archive_corrupt,
        }


def mismatched(bar: Bar, spec: SymbolSpec) -> Bar:
    """The REST version of a bar under ``kline_mismatch``: a late correction by the exchange.

    Close moves up by 0.1 % (at least a tick) and the volume by 5 % (at least a lot), with one
    more trade and the quote volume of the added lots at the new close, so the difference is
    beyond the service's reconciliation tolerances (0.01 % price, 1 % volume).
    """
    step = max(spec.tick_units, bar.close // 1000 // spec.tick_units * spec.tick_units)
    close = bar.close + step
    lots = max(spec.step_units, bar.volume // 20 // spec.step_units * spec.step_units)
    quote = bar.quote + spec.quote_of(close, lots)
    if bar.trades == 0:
        return bar._replace(open=close, high=close, low=close, close=close, volume=lots, quote=quote, trades=1)
    return bar._replace(close=close, high=max(bar.high, close), volume=bar.volume + lots, quote=quote, trades=bar.trades + 1)
