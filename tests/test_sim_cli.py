"""``klinestore sim`` as a subprocess: first line JSON, serves, exits 0 on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

import pytest
from websockets.asyncio.client import connect

from klinestore.cli import build_parser, command_module
from simfixtures import get
from support import klinestore_command, subprocess_env


def start(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        klinestore_command("sim", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, json.loads(line)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_urls_serves_and_exits_0(sig: signal.Signals) -> None:
    proc, urls = start("--port", "0", "--symbols", "BTCUSDT,ETHUSDT", "--speed", "60", "--seed", "7")
    try:
        assert set(urls) == {"ws", "rest", "archive"}
        assert urls["ws"].startswith("ws://127.0.0.1:") and urls["rest"].startswith("http://127.0.0.1:")
        assert get(urls["rest"] + "/fapi/v1/ping")[:1] == (200,)

        async def one_frame() -> dict:  # type: ignore[type-arg]
            async with connect(urls["ws"] + "/market/stream?streams=btcusdt@kline_1m") as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), 5))

        assert asyncio.run(one_frame())["stream"] == "btcusdt@kline_1m"
        proc.send_signal(sig)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_cli_port_and_rest_port() -> None:
    proc, urls = start("--port", "0", "--rest-port", "0", "--speed", "1", "--start", "2024-05-01T00:00:00Z")
    try:
        status, _, body = get(urls["rest"] + "/fapi/v1/time")
        assert status == 200 and 1_714_521_600_000 <= body["serverTime"] < 1_714_521_600_000 + 60_000
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--speed", "-1"], 1, "sim option speed"),
        (["--host", "0.0.0.0"], 2, "invalid choice"),
        (["--list", "NEWUSDT"], 1, "SYMBOL@TIME"),
        (["--start", "yesterday"], 1, "ISO time"),
        (["--quiet-symbols", "BTC-USDT"], 1, "BTC-USDT"),
    ],
)
def test_cli_refuses_bad_options(args: list[str], code: int, words: str) -> None:
    result = subprocess.run(klinestore_command("sim", *args), capture_output=True, text=True, env=subprocess_env(), timeout=30)
    assert result.returncode == code and words in result.stderr and result.stdout == ""


def test_cli_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    module = command_module("sim")
    assert module.HELP and module.DESCRIPTION and "klinestore sim --port 0" in module.EXAMPLES
    with pytest.raises(SystemExit):
        build_parser("sim").parse_args(["sim", "--help"])
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "--replay" in help_text and "--max-connection-age" in help_text
    config = module.config_from_args(build_parser("sim").parse_args(["sim", "--port", "9000"]))
    assert (config.port, config.rest_port) == (9000, 9001)
    assert module.config_from_args(build_parser("sim").parse_args(["sim", "--replay", "x"])).symbols == ()


def test_cli_reports_a_busy_port() -> None:
    proc, urls = start("--port", "0")
    try:
        port = urls["ws"].rsplit(":", 1)[1]
        result = subprocess.run(klinestore_command("sim", "--port", port), capture_output=True, text=True,
                                env=subprocess_env(), timeout=30)
        assert result.returncode == 1 and "cannot listen" in result.stderr and result.stdout == ""
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
