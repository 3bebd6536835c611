"""The ``klinestore`` command line: a thin layer over the library.

Each subcommand lives in ``klinestore/commands/<name>.py`` and defines ``HELP`` (one line),
``DESCRIPTION``, ``EXAMPLES``, ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported only when their command runs, so ``klinestore sql`` never pays for websockets.
A test checks that every command has help text and examples.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from klinestore import __version__
from klinestore.core.errors import KlinestoreError
from klinestore.core.logtext import OneLineFormatter

#: Command name -> module under klinestore.commands (``import`` is a Python keyword).
COMMANDS: dict[str, str] = {
    "run": "run",
    "sim": "sim",
    "import": "import_",
    "compact": "compact",
    "publish": "publish",
    "sql": "sql",
    "export": "export",
    "status": "status",
    "list": "list_",
    "download": "download",
    "chart": "chart",
    "dataqual": "dataqual",
}

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"klinestore.commands.{COMMANDS[name]}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; ``only`` imports just one command's module (fast start-up)."""
    parser = argparse.ArgumentParser(
        prog="klinestore",
        description="Binance USD-M futures klines: live ingest, durable Parquet, SQL, exports.",
        epilog="Run 'klinestore COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"klinestore {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if only is not None and name != only:
            sub.add_parser(name, help="(see klinestore %s --help)" % name, add_help=False)
            continue
        module = command_module(name)
        cmd = sub.add_parser(
            name,
            help=module.HELP,
            description=module.DESCRIPTION,
            epilog="examples:\n" + module.EXAMPLES.strip("\n"),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def setup_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr, one event per line: messages are escaped and capped (``core.logtext``),
    since frames and files from outside reach them."""
    level = logging.WARNING if quiet else logging.INFO if verbose < 2 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only)
    args = parser.parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        parser.print_help()
        return EXIT_USAGE
    setup_logging(args.verbose, args.quiet)
    try:
        return int(module.run(args) or 0)
    except KlinestoreError as exc:
        print(f"klinestore {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # a path the layers did not name in their own error: still one line
        where = f": {exc.filename}" if exc.filename else ""
        print(f"klinestore {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
