"""``edgebench``: the controller's command line.

Each subcommand lives in ``controller.commands.<name>`` and exposes ``register(subparsers)``, which adds
its parser and sets ``func(args) -> int`` (an exit code). Command modules must be cheap to import:
heavy imports (TensorFlow, pandas, paramiko) go inside ``func``. This module is the ONE place where
exceptions become exit codes and where logging is configured.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from controller import __version__
from controller.errors import EdgebenchError, ExitCode

COMMANDS = ("convert", "inspect", "run", "devices", "bootstrap", "report", "history")

EPILOG = """exit codes:
  0  everything asked for succeeded
  1  some jobs or devices failed (the others' results are kept)
  2  usage or config error, bad input file (the message names the file and the fix)
  3  no selected device was reachable
  4  a tool edgebench drives failed (converter, quantizer) or an optional extra is missing
  5  reserved for `edgebench nightly` (not built yet): a regression or drift flagged
  130 interrupted (completed results are kept)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgebench",
        description="Which precision of which model runs best on which board - and is it still right? "
        "Convert a model into fp32/fp16/dynamic/int8 TFLite variants, run them on a fleet of devices "
        "over SSH, and compare speed, memory, size and accuracy drift.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgebench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"controller.commands.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return int(ExitCode.USAGE)
    try:
        return int(args.func(args))
    except EdgebenchError as exc:
        print(f"edgebench {args.command}: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(f"edgebench {args.command}: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
