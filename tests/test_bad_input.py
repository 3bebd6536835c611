"""Every command, given bad input, answers in one line: never a Python traceback (issue 14).

Bad input here is what a user or the disk can hand a command: nonsense flag values, numbers
out of range or not finite, paths that cannot be what they should (a file for a directory,
``/proc``), a config with ``Infinity``, a damaged Parquet file or a lying zip in the store.
Each case runs the real CLI in a subprocess and checks its exit status and its stderr.
"""

from __future__ import annotations

import subprocess
import zlib

import pytest

from klinestore.cli import COMMANDS
from queries_support import build_dataset
from support import klinestore_command, subprocess_env

#: command -> argument lists, each bad in one way ("{data}": a store with a zero-byte Parquet
#: file; "{file}": a regular file; "{cfg}": a config holding Infinity; "{zip}": a zip bomb).
_LOCAL = ["--ws-url", "ws://127.0.0.1:9", "--rest-url", "http://127.0.0.1:9"]  # never the real exchange
_ARCHIVE = ["--archive-url", "http://127.0.0.1:9"]  # nor its archive host
CASES: dict[str, list[list[str]]] = {
    "run": [[*_LOCAL, "--for", "-1", "--data-dir", "{data}"], [*_LOCAL, "--for", "nan", "--data-dir", "{data}"],
            [*_LOCAL, "--data-dir", "{file}", "--for", "1"], [*_LOCAL, "--data-dir", "/proc/self", "--for", "1"],
            [*_LOCAL, "--config", "{cfg}", "--for", "1"], [*_LOCAL, "--config", "{file}"],
            [*_LOCAL, "--symbols", "bad symbol!", "--for", "1"], ["--sim", "--sim-speed", "0", "--for", "1"],
            ["--sim", "--sim-speed", "1e400", "--for", "1"], ["--sim", "--sim-start", "yesterday-ish", "--for", "1"],
            ["--ws-url", "not a url", "--rest-url", "http://127.0.0.1:9", "--for", "1"]],
    "sim": [["--speed", "-1"], ["--speed", "inf"], ["--start", "xyz"], ["--replay", "/nonexistent"],
            ["--port", "70000"], ["--list", "BAD"], ["--seed", "x"]],
    "import": [["/nonexistent.zip", "--data-dir", "{data}"], ["{file}", "--data-dir", "{data}"],
               ["{zip}", "--data-dir", "{data}"], ["{zip}", "--data-dir", "{file}"],
               ["{zip}", "--interval", "7m", "--data-dir", "{data}"], ["{zip}", "--symbol", "x y", "--data-dir", "{data}"]],
    "compact": [["--data-dir", "{file}"], ["--data-dir", "/proc/self"], ["--data-dir", "{data}"]],
    "publish": [["--to", "ftp://example.invalid/x", "--data-dir", "{data}"], ["--to", "{file}", "--data-dir", "{data}"],
                ["--to", "/proc/self/x", "--data-dir", "{data}"]],
    "sql": [["SELEC 1", "--data-dir", "{data}"], ["SELECT 1::VARINT", "--format", "csv", "--data-dir", "{data}"],
            ["SELECT 1", "--out", "/proc/self/x.csv", "--data-dir", "{data}"], ["SELECT 1", "--max-rows", "-1"],
            ["SELECT * FROM bars", "--data-dir", "{file}"], ["SELECT 1", "--out", "{data}/bars/x.csv", "--data-dir", "{data}"],
            ["SELECT 'a'::BLOB AS b, [1] AS l", "--format", "json", "--data-dir", "{data}"],
            ["SELECT * FROM read_csv('/etc/passwd')", "--data-dir", "{data}"]],
    "export": [["--symbol", "BTCUSDT", "--interval", "1m", "--start", "not a date", "--out", "{tmp}/x.csv",
                "--data-dir", "{data}"],
               ["--symbol", "BTCUSDT", "--interval", "7m", "--out", "{tmp}/x.csv", "--data-dir", "{data}"],
               ["--symbol", "bad symbol", "--interval", "1m", "--out", "{tmp}/x.csv", "--data-dir", "{data}"],
               ["--symbol", "BTCUSDT", "--interval", "1m", "--start", "2024-02-01", "--end", "2024-01-01",
                "--out", "{tmp}/x.csv", "--data-dir", "{data}"],
               ["--symbol", "BTCUSDT", "--interval", "1m", "--out", "/proc/self/x.csv", "--data-dir", "{data}"],
               ["--symbol", "BTCUSDT", "--interval", "1m", "--out", "{tmp}/x.csv", "--data-dir", "{file}"]],
    "status": [["--data-dir", "{file}"], ["--shard", "-1", "--data-dir", "{data}"],
               ["--shard", "99999", "--data-dir", "{data}"], ["--data-dir", "{garbage}"]],
    "chart": [["--symbol", "BTCUSDT", "--interval", "1m", "--start", "bad", "--out", "{tmp}/c.png", "--data-dir", "{data}"],
              ["--symbol", "BTCUSDT", "--interval", "1m", "--out", "/proc/self/c.png", "--data-dir", "{data}"],
              ["--symbol", "NOPEUSDT", "--interval", "1m", "--out", "{tmp}/c.png", "--data-dir", "{data}"]],
    "dataqual": [["--symbol", "bad symbol", "--data-dir", "{data}"], ["--plot", "/proc/self/x.png", "--data-dir", "{data}"],
                 ["--data-dir", "{file}"], ["--data-dir", "{garbage}"]],
    "list": [["--data-dir", "{file}"], ["--data-dir", "/nonexistent"], ["--symbol", "bad symbol", "--data-dir", "{data}"],
             ["--interval", "7m", "--data-dir", "{data}"], ["--data-dir", "{garbage}"]],
    "download": [[*_ARCHIVE, "--symbols", "bad symbol", "--intervals", "1m", "--start", "2024-01-01", "--end", "2024-01-02",
                  "--data-dir", "{data}"],
                 [*_ARCHIVE, "--symbols", "BTCUSDT", "--intervals", "7m", "--start", "2024-01-01", "--end", "2024-01-02",
                  "--data-dir", "{data}"],
                 [*_ARCHIVE, "--symbols", "BTCUSDT", "--intervals", "1m", "--start", "2024-02-01", "--end", "2024-01-01",
                  "--data-dir", "{data}"],
                 [*_ARCHIVE, "--symbols", "BTCUSDT", "--intervals", "1m", "--start", "soon", "--end", "2024-01-02",
                  "--data-dir", "{data}"],
                 [*_ARCHIVE, "--symbols", "BTCUSDT", "--intervals", "1m", "--start", "2024-01-01", "--end", "2024-01-02",
                  "--data-dir", "{file}"],
                 ["--archive-url", "ftp://example.invalid", "--symbols", "BTCUSDT", "--intervals", "1m", "--start",
                  "2024-01-01", "--end", "2024-01-02", "--data-dir", "{data}"]],
}


def test_every_command_has_bad_input_cases() -> None:
    assert set(CASES) == set(COMMANDS)


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad")
    data = build_dataset(root / "data", ("BTCUSDT",), 120)
    next(iter((data / "bars").rglob("*.parquet"))).write_bytes(b"")
    (root / "file").write_text("not a directory, not a zip, not a config\n")
    (root / "cfg.json").write_text('{"storage": {"flush_interval": Infinity}}')
    garbage = root / "garbage"
    (garbage / "tables" / "dataqual").mkdir(parents=True)
    (garbage / "status.json").write_text("{\x00not json")
    (garbage / "tables" / "dataqual" / "part-0.parquet").write_bytes(b"PAR1 not really")
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = b"".join(squeeze.compress(bytes(1 << 20)) for _ in range(64)) + squeeze.flush()
    name = b"BTCUSDT-1m-2024-01-01.csv"
    header = (20, 0, 8, 0, 0, zlib.crc32(bytes(1000)), len(packed), 1000)
    import struct
    fields = struct.pack("<HHHHHIII", *header)
    local = b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name
    central = b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, 0) + name
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(central), len(local) + len(packed), 0)
    (root / "BTCUSDT-1m-2024-01-01.zip").write_bytes(local + packed + central + end)
    return {"data": str(data), "file": str(root / "file"), "cfg": str(root / "cfg.json"), "tmp": str(root),
            "zip": str(root / "BTCUSDT-1m-2024-01-01.zip"), "garbage": str(garbage)}


def _id(command: str, args: list[str]) -> str:
    return f"{command}:{' '.join(a for a in args if a not in _LOCAL + _ARCHIVE)[:70]}"


@pytest.mark.parametrize(("command", "args"), [pytest.param(c, a, id=_id(c, a)) for c, cases in CASES.items()
                                               for a in cases])
def test_bad_input_gets_one_line_never_a_traceback(places: dict[str, str], command: str, args: list[str]) -> None:
    argv = [a.format(**places) for a in args]
    done = subprocess.run(klinestore_command(command, *argv), env=subprocess_env(), capture_output=True, text=True,
                          timeout=60, cwd=places["tmp"])
    assert "Traceback" not in done.stderr and "panicked" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if " error: " in line or line.startswith("klinestore")]
    if done.returncode not in (0, 3):
        assert errors, done.stderr[-2000:]
        assert all(len(line) < 2000 for line in errors)
