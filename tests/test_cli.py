"""Every command has help text and examples, and ``klinestore COMMAND --help`` works."""

from __future__ import annotations

import subprocess
import sys

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


def test_the_cli_logs_one_escaped_line_per_event() -> None:
    """Issue 14 case 5: what the CLI's logging writes for a message holding hostile text."""
    script = ("import logging\nfrom klinestore.cli import setup_logging\nsetup_logging(0, False)\n"
              "logging.getLogger('klinestore.ingest').warning('frame %s', 'x\\n2024-01-01 00:00:00,000 CRITICAL "
              "forged\\x1b[31m\\r' + 'A' * 50000)\n"
              "try:\n    raise ValueError('bad\\n2024-01-01 CRITICAL forged too')\n"
              "except ValueError:\n    logging.getLogger('x').exception('failed')\n")
    done = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True,
                          timeout=60)
    lines = done.stderr.splitlines()
    events = [line for line in lines if not line.startswith("    ")]
    assert len(events) == 2, lines
    assert "\\n2024-01-01 00:00:00,000 CRITICAL forged\\x1b[31m\\r" in events[0] and "more characters" in events[0]
    assert "\x1b" not in done.stderr and len(events[0]) < 2200
    assert all(line.startswith("    ") for line in lines[2:])  # the traceback, indented: nothing forged
