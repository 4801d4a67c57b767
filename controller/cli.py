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
import os
import signal
import sys
import threading
from typing import NoReturn

from controller import __version__
from controller.errors import EdgebenchError, ExitCode

COMMANDS = ("convert", "inspect", "run", "devices", "bootstrap", "profile", "compare", "nightly", "schedule",
            "report", "history")


def epilog() -> str:
    """The exit-code table of ``--help``, from :class:`controller.errors.ExitCode` (one source)."""
    lines = ["exit codes:"]
    for code in sorted(ExitCode, key=int):
        lines.append(f"  {int(code):<4}{EXIT_TEXT[code]}")
    return "\n".join(lines) + "\n"


EXIT_TEXT = {
    ExitCode.OK: "everything asked for succeeded",
    ExitCode.PARTIAL: "some jobs or devices failed (the others' results are kept)",
    ExitCode.USAGE: "usage or config error, bad input file (the message names the file and the fix)",
    ExitCode.NO_DEVICE: "no selected device was reachable",
    ExitCode.TOOL: "a tool edgebench drives failed (converter, quantizer) or an optional extra is missing",
    ExitCode.REGRESSION: "compare / nightly: a regression was found (nightly: confirmed by a re-measure)",
    ExitCode.DRIFT: "run: a variant's outputs drifted from fp32 past --top1-drop / --min-cosine",
    ExitCode.INTERNAL: "a bug in edgebench: one line says where the traceback was written",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C or SIGTERM (completed results are kept)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgebench",
        description="Which precision of which model runs best on which board - and is it still right? "
        "Convert a model into fp32/fp16/dynamic/int8 TFLite variants, run them on a fleet of devices "
        "over SSH, and compare speed, memory, size and accuracy drift.",
        epilog=epilog(),
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
    previous = _sigterm_unwinds()
    try:
        return int(args.func(args))
    except EdgebenchError as exc:
        print(f"edgebench {args.command}: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(f"edgebench {args.command}: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a bug: one line for the user, the traceback in a file
        where = _save_traceback(args.command)
        print(f"edgebench {args.command}: internal error ({type(exc).__name__}: {exc}); this is a bug in "
              f"edgebench, the traceback is in {where}", file=sys.stderr)
        return int(ExitCode.INTERNAL)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def entry(argv: list[str] | None = None) -> NoReturn:
    """The process's entry point (the ``edgebench`` script and ``python -m controller``): :func:`main`,
    then flush the log handlers and stdout/stderr and leave with ``os._exit``.

    Why not a plain ``sys.exit``: at interpreter teardown pyarrow's native thread pools are destroyed while
    a worker may still be alive, and the process then aborts ("terminate called without an active
    exception", exit 134) after all its work was done and printed - apache/arrow#34314, still open. Here
    one ``pd.read_parquet`` and a normal exit aborted 24 times in 600 on a busy 2-core box, 0 in 600
    with ``os._exit``. Nothing of edgebench's needs the teardown: every file and connection is closed by
    the code that opened it (context managers), and no atexit handler is registered."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, --version and usage errors
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (edgebench ... | head): nothing left to write to
            pass
    os._exit(code)


def _sigterm_unwinds():
    """SIGTERM unwinds like Ctrl-C (results kept, exit 130). Returns the previous handler, or None when
    not on the main thread (a handler cannot be set there)."""

    def on_term(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, on_term)


def _save_traceback(command: str) -> str:
    """Write the current exception's traceback to a new file under the cache folder; return its path
    (or a note that it went to stderr when no file could be written)."""
    import datetime
    import os
    import tempfile
    import traceback

    text = f"edgebench {__version__} {command}\n{traceback.format_exc()}"
    from controller.defaults import cache_folder

    folder = cache_folder("crashes")
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    try:
        os.makedirs(folder, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=folder, prefix=f"{stamp}-{command}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return path
    except OSError:
        sys.stderr.write(text)
        return "the output above (no file could be written)"


if __name__ == "__main__":  # pragma: no cover
    entry()
