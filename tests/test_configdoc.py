"""docs/config.md is generated from the config schema and must match it (regenerate with one command)."""

from __future__ import annotations

from pathlib import Path

from klinestore.config import config_reference
from klinestore.configdoc import COMMAND, DOC_PATH, README_PATH, main, render, splice_readme


def test_committed_reference_matches_the_schema() -> None:
    committed = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.is_file() else ""
    assert committed == render(), f"docs/config.md is out of date with the config sections: run `{COMMAND}`"


def test_the_readme_table_matches_the_schema() -> None:
    committed = README_PATH.read_text(encoding="utf-8")
    assert committed == splice_readme(committed), f"README.md's configuration table is out of date: run `{COMMAND}`"
    for key, _, _, _ in config_reference():
        assert f"| `{key}` | " in committed


def test_every_key_has_a_doc_and_a_row() -> None:
    text = render()
    for key, kind, _, doc in config_reference():
        assert doc.strip(), f"config key {key} has no doc: give it one in its package's config.py, then run `{COMMAND}`"
        assert f"| `{key}` | " in text and kind
    for variable in ("WEBSOCKET_ONLY_KLINES", "DISABLE_REST_FALLBACK", "KLINESTORE_DATA_DIR", "KLINESTORE_CONFIG"):
        assert f"| `{variable}` |" in text


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "config.md"
    stale.write_text("# old\n")
    assert main(["--check", "--out", str(stale)]) == 1
    assert main(["--out", str(stale)]) == 0 and main(["--check", "--out", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == render()
