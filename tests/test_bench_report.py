"""The benchmark report: figures beside their baselines, spliced into BENCHMARKS.md between markers."""

from __future__ import annotations

from pathlib import Path

from bench.__main__ import MARK_END, MARK_START, markdown_table, splice_markdown
from bench.harness import Figure


def test_ratios_say_ahead_above_one_whichever_way_is_better() -> None:
    assert Figure("a", "rows/s", 2.0, "M/s", 1.0).ratio == 2.0
    assert Figure("a", "latency", 5.0, "ms", 10.0, better="lower").ratio == 2.0
    assert Figure("a", "no baseline", 5.0, "ms").ratio is None


def test_the_table_replaces_only_its_own_block(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\n\nprose before\n\n{MARK_START}old table\n{MARK_END}\nprose after\n")
    figures = [Figure("queries", "one symbol | year", 13.0, "ms", 4.5, "freqtrade", better="lower", goal="faster")]
    splice_markdown(path, markdown_table(figures, "python -m bench", 600))
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nprose before\n") and text.endswith(f"{MARK_END}\nprose after\n")
    assert "old table" not in text and "`python -m bench` on " in text and "the whole run took 10 min" in text
    assert "| queries | one symbol \\| year | 13 ms | 4.5 ms (freqtrade) | 0.35x | faster |" in text
