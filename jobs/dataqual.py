"""DataQual: a per-symbol data-quality score in [0, 1], pure and explainable.

The score is ``1 - sum(penalties)`` clamped to [0, 1]. Each penalty comes from one cause and
carries its reason, so every change of the score says why. Two kinds of cause:

* **State** (missing streams, stale data, open gaps): computed from the current state at each
  check, so the penalty clears at the first check after the cause clears.

  - Missing streams follow the seed's table (1 → 0.10, 2 → 0.20, 3 → 0.30, more → 0.80).
  - Stale: the symbol's next 1m bar is more than ``stale_after_s`` late on the exchange clock
    (0.30). When the 1m kline stream itself is missing, that is the same cause and counts once.
  - Gaps: 0.01 per missing 1m bar in open gap records (capped at 0.30); the caller counts only
    bars inside the served history (the 1m ring's span), so a gap stops weighing once it is
    filled (a back-fill, an import) or once no frame can contain it any more.

* **Events** (reconciliation mismatches 0.05, order-book resyncs 0.02): each event's penalty
  halves every ``half_life_s`` seconds of exchange time, and each kind is capped at 0.30. A
  penalty under 0.005 (0.00 at two decimals) is dropped, so an isolated mismatch leaves the
  score after 3.3 half-lives (50 min at the default 15 min) and a resync after 2 (30 min).
  Why a decay and why 15 min: the REST check runs every 5 min, so a source that mismatches at
  every check holds a weight of ~4.8 (0.24, below the 0.90 alert line) while one isolated
  mismatch costs 0.05 and is forgotten within the hour that the ``mismatches`` column counts;
  a decay fades smoothly instead of jumping back when an event leaves a fixed window.

Unlike the seed (which subtracted its penalty from the previous score at every check, so one
missing stream drove the score to 0 in five minutes), the score here is a function of the
causes, not of how often it was computed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from klinestore.core.intervals import HOUR_MS

#: The seed's table: missing stream count -> penalty (4 or more: 0.80).
MISSING_STREAM_PENALTY = {0: 0.0, 1: 0.10, 2: 0.20, 3: 0.30}
MISSING_STREAM_PENALTY_MANY = 0.80

MISMATCH_PENALTY = 0.05
RESYNC_PENALTY = 0.02
EVENT_PENALTY_CAP = 0.30  # per event kind
EVENT_PENALTY_FLOOR = 0.005  # a decayed penalty below this is dropped (it would show as 0.00)
GAP_PENALTY_PER_BAR = 0.01
GAP_PENALTY_CAP = 0.30
STALE_PENALTY = 0.30
DEFAULT_HALF_LIFE_S = 15 * 60.0
DEFAULT_STALE_AFTER_S = 30.0
#: A score that moved at least this much (or whose causes changed) is a change worth a log line.
CHANGE_STEP = 0.01
_EVENT_HISTORY = 256  # events remembered per symbol and kind (older ones weigh ~0)


def missing_stream_penalty(count: int) -> float:
    """The seed's table."""
    if count < 0:
        raise ValueError("count must be >= 0")
    return MISSING_STREAM_PENALTY.get(count, MISSING_STREAM_PENALTY_MANY)


@dataclass(frozen=True, slots=True, kw_only=True)
class SymbolHealth:
    """What the service knows about one symbol at one check.

    ``missing_streams`` are the streams silent while data was due (``klinestore.ingest.liveness``);
    ``quiet_streams`` the ones silent because their market had nothing to report: named in the
    reasons, never penalised.
    ``stale_s`` is how late (exchange seconds) the symbol's next 1m bar is, or None when it is
    not late. ``gap_bars`` counts missing 1m bars in open gap records within the served history.
    """

    symbol: str
    missing_streams: tuple[str, ...] = ()
    quiet_streams: tuple[str, ...] = ()
    stale_s: float | None = None
    gap_bars: int = 0


@dataclass(frozen=True, slots=True)
class Score:
    """A symbol's score at ``ts_ms`` with each cause's penalty and a reason per cause."""

    symbol: str
    ts_ms: int
    score: float
    missing_streams: int
    mismatches: int  # mismatch events in the last hour
    gaps: int
    penalties: Mapping[str, float]
    reasons: tuple[str, ...]

    @property
    def reason_text(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "ok"


@dataclass(slots=True)
class _Events:
    mismatches: deque[int] = field(default_factory=lambda: deque(maxlen=_EVENT_HISTORY))
    resyncs: deque[int] = field(default_factory=lambda: deque(maxlen=_EVENT_HISTORY))


class DataQualModel:
    """Scores symbols from their health and their recent events (exchange time, ms)."""

    def __init__(self, *, half_life_s: float = DEFAULT_HALF_LIFE_S,
                 stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s must be > 0")
        self.half_life_s = half_life_s
        self.stale_after_s = stale_after_s
        self._events: dict[str, _Events] = {}
        self._last: dict[str, Score] = {}

    def record_mismatch(self, symbol: str, ts_ms: int) -> None:
        self._events.setdefault(symbol, _Events()).mismatches.append(ts_ms)

    def record_resync(self, symbol: str, ts_ms: int) -> None:
        self._events.setdefault(symbol, _Events()).resyncs.append(ts_ms)

    def forget(self, symbol: str) -> None:
        """A symbol that is no longer ingested (delisted)."""
        self._events.pop(symbol, None)
        self._last.pop(symbol, None)

    def score(self, health: SymbolHealth, now_ms: int) -> Score:
        """The score of one symbol now; pure given the recorded events."""
        penalties: dict[str, float] = {}
        reasons: list[str] = []
        missing = len(health.missing_streams)
        if missing:
            penalties["missing_streams"] = missing_stream_penalty(missing)
            names = ", ".join(sorted(health.missing_streams)[:5]) + (" ..." if missing > 5 else "")
            reasons.append(f"{missing} stream{'s' if missing > 1 else ''} missing ({names}): -{penalties['missing_streams']:.2f}")
        if health.quiet_streams:
            quiet = len(health.quiet_streams)
            names = ", ".join(sorted(health.quiet_streams)[:5]) + (" ..." if quiet > 5 else "")
            reasons.append(f"{quiet} stream{'s' if quiet > 1 else ''} quiet ({names}): no trades to report, no penalty")
        if health.stale_s is not None and health.stale_s > self.stale_after_s and not _covers_1m(health.missing_streams):
            penalties["stale"] = STALE_PENALTY
            reasons.append(f"next 1m bar {health.stale_s:.0f} s late: -{STALE_PENALTY:.2f}")
        if health.gap_bars > 0:
            penalties["gaps"] = min(GAP_PENALTY_CAP, GAP_PENALTY_PER_BAR * health.gap_bars)
            reasons.append(f"{health.gap_bars} missing 1m bar{'s' if health.gap_bars > 1 else ''}: -{penalties['gaps']:.2f}")
        events = self._events.get(health.symbol)
        weight_mismatch = self._weight(events.mismatches, now_ms) if events else 0.0
        weight_resync = self._weight(events.resyncs, now_ms) if events else 0.0
        mismatch_penalty = min(EVENT_PENALTY_CAP, MISMATCH_PENALTY * weight_mismatch)
        resync_penalty = min(EVENT_PENALTY_CAP, RESYNC_PENALTY * weight_resync)
        if mismatch_penalty >= EVENT_PENALTY_FLOOR:
            penalties["mismatches"] = mismatch_penalty
            reasons.append(f"reconciliation mismatches (decayed weight {weight_mismatch:.2f}): -{mismatch_penalty:.2f}")
        if resync_penalty >= EVENT_PENALTY_FLOOR:
            penalties["resyncs"] = resync_penalty
            reasons.append(f"order-book resyncs (decayed weight {weight_resync:.2f}): -{resync_penalty:.2f}")
        value = max(0.0, min(1.0, 1.0 - sum(penalties.values())))
        result = Score(
            symbol=health.symbol,
            ts_ms=now_ms,
            score=round(value, 6),
            missing_streams=missing,
            mismatches=sum(1 for t in events.mismatches if 0 <= now_ms - t <= HOUR_MS) if events else 0,
            gaps=health.gap_bars,
            penalties=penalties,
            reasons=tuple(reasons),
        )
        self._last[health.symbol] = result
        return result

    def score_all(self, healths: Iterable[SymbolHealth], now_ms: int) -> list[Score]:
        return [self.score(h, now_ms) for h in healths]

    def last(self, symbol: str) -> Score | None:
        """The latest score computed for ``symbol``."""
        return self._last.get(symbol)

    def changed(self, previous: Score | None, current: Score, *, step: float = CHANGE_STEP) -> bool:
        """True when the causes changed or the score moved by ``step`` (what deserves a log line).

        A decaying event penalty moves the score a little at every check; comparing against the
        last *reported* score with a step keeps the log to real changes.
        """
        if previous is None:
            return True
        return abs(previous.score - current.score) >= step - 1e-9 or set(previous.penalties) != set(current.penalties)

    def _weight(self, times: deque[int], now_ms: int) -> float:
        decay = math.log(2) / (self.half_life_s * 1000.0)
        return sum(math.exp(-decay * max(0, now_ms - t)) for t in times)


def _covers_1m(missing: Iterable[str]) -> bool:
    """Staleness of 1m bars is the same cause as a missing 1m kline stream: count it once."""
    return any(name.endswith("@kline_1m") for name in missing)
