"""Every command has help text and examples, and ``klinestore COMMAND --help`` works."""

from __future__ import annotations

import subprocess

import pytest

from klinestore.cli import COMMANDS, command_module, main
from support import klinestore_command, subprocess_env


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_has_help_description_and_examples(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = command_module(name)
    assert isinstance(module.HELP, str) and 10 <= len(module.HELP) <= 150 and "\n" not in module.HELP
    assert isinstance(module.DESCRIPTION, str) and len(module.DESCRIPTION) >= 80
    examples = [line.strip() for line in module.EXAMPLES.splitlines() if line.strip().startswith("klinestore ")]
    assert examples and all(line.startswith(f"klinestore {name}") for line in examples), module.EXAMPLES
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert module.DESCRIPTION.splitlines()[0] in shown and examples[0] in shown


def test_top_level_help_lists_every_command() -> None:
    result = subprocess.run(klinestore_command("--help"), env=subprocess_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout
