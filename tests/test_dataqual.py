"""DataQual model: the seed's missing-stream table, explainable penalties, recovery."""

from __future__ import annotations

import pytest

from klinestore.jobs.dataqual import DataQualModel, SymbolHealth, missing_stream_penalty

MIN = 60_000


def test_seed_table_for_missing_streams() -> None:
    assert [missing_stream_penalty(n) for n in range(7)] == [0.0, 0.10, 0.20, 0.30, 0.80, 0.80, 0.80]
    model = DataQualModel()
    for count, expected in [(0, 1.0), (1, 0.90), (2, 0.80), (3, 0.70), (4, 0.20), (5, 0.20)]:
        streams = tuple(f"btcusdt@kline_{iv}" for iv in ("5m", "15m", "1h", "4h", "1d")[:count])
        score = model.score(SymbolHealth(symbol="BTCUSDT", missing_streams=streams), 0)
        assert score.score == pytest.approx(expected)
        assert score.missing_streams == count
        assert bool(score.reasons) == bool(count)


def test_score_does_not_drift_with_check_frequency() -> None:
    model = DataQualModel()
    health = SymbolHealth(symbol="BTCUSDT", missing_streams=("btcusdt@aggTrade",))
    scores = [model.score(health, t * 30_000).score for t in range(20)]
    assert all(s == pytest.approx(0.90) for s in scores)


def test_missing_stream_recovers_at_the_next_check() -> None:
    model = DataQualModel()
    assert model.score(SymbolHealth(symbol="X1", missing_streams=("x1@aggTrade",)), 0).score == pytest.approx(0.9)
    recovered = model.score(SymbolHealth(symbol="X1"), 30_000)
    assert recovered.score == 1.0 and recovered.reasons == ()


def test_mismatch_penalty_decays_by_half_life() -> None:
    model = DataQualModel(half_life_s=600)
    model.record_mismatch("BTCUSDT", 0)
    health = SymbolHealth(symbol="BTCUSDT")
    at0 = model.score(health, 0)
    assert at0.score == pytest.approx(0.95)
    assert "mismatch" in at0.reason_text
    assert model.score(health, 600_000).score == pytest.approx(0.975)
    assert model.score(health, 6 * 3600_000).score == 1.0


def test_penalties_are_capped_and_score_clamped() -> None:
    model = DataQualModel()
    for t in range(100):
        model.record_mismatch("B1", t)
        model.record_resync("B1", t)
    score = model.score(SymbolHealth(symbol="B1", missing_streams=tuple(f"b1@kline_{i}" for i in ("1m", "5m", "15m", "1h")), gap_bars=500), 100)
    assert score.score == 0.0
    assert score.penalties["mismatches"] == pytest.approx(0.30)
    assert score.penalties["gaps"] == pytest.approx(0.30)


def test_stale_1m_counted_once_with_a_missing_1m_stream() -> None:
    model = DataQualModel()
    stale_only = model.score(SymbolHealth(symbol="E1", stale_s=180), 0)
    assert stale_only.score == pytest.approx(0.70)
    both = model.score(SymbolHealth(symbol="E1", stale_s=180, missing_streams=("e1@kline_1m",)), 0)
    assert both.score == pytest.approx(0.90)


def test_gaps_cost_per_missing_bar() -> None:
    model = DataQualModel()
    assert model.score(SymbolHealth(symbol="G1", gap_bars=3), 0).score == pytest.approx(0.97)


def test_changes_are_detected_with_reasons() -> None:
    model = DataQualModel()
    a = model.score(SymbolHealth(symbol="C1"), 0)
    b = model.score(SymbolHealth(symbol="C1", missing_streams=("c1@aggTrade",)), 1)
    assert model.changed(None, a) and model.changed(a, b) and not model.changed(b, b)
    assert model.last("C1") is b


def test_stale_only_past_the_threshold() -> None:
    model = DataQualModel(stale_after_s=30)
    assert model.score(SymbolHealth(symbol="S1", stale_s=29), 0).score == 1.0
    late = model.score(SymbolHealth(symbol="S1", stale_s=31), 0)
    assert late.score == pytest.approx(0.70) and "31 s late" in late.reason_text


def test_a_decayed_event_leaves_the_score_once_it_shows_as_zero() -> None:
    model = DataQualModel(half_life_s=900)
    model.record_mismatch("M1", 0)
    model.record_resync("M1", 0)
    health = SymbolHealth(symbol="M1")
    assert model.score(health, 0).score == pytest.approx(0.93)
    # the resync (0.02) is gone after 2 half-lives, the mismatch (0.05) after 3.32
    after_31min = model.score(health, 31 * MIN)
    assert set(after_31min.penalties) == {"mismatches"}
    after_50min = model.score(health, 50 * MIN)
    assert after_50min.score == 1.0 and after_50min.reasons == () and after_50min.mismatches == 1
    assert model.score(health, 61 * MIN).mismatches == 0  # the column counts the last hour


def test_small_drifts_are_not_changes() -> None:
    model = DataQualModel(half_life_s=900)
    model.record_mismatch("D1", 0)
    first = model.score(SymbolHealth(symbol="D1"), 0)
    drifted = model.score(SymbolHealth(symbol="D1"), 30_000)  # 0.95 -> 0.9512
    assert not model.changed(first, drifted)
    assert model.changed(first, model.score(SymbolHealth(symbol="D1"), 25 * MIN))  # moved 0.01+


def test_forget_drops_a_symbols_events() -> None:
    model = DataQualModel()
    model.record_mismatch("F1", 0)
    model.forget("F1")
    assert model.score(SymbolHealth(symbol="F1"), 0).score == 1.0
