"""``python -m agent`` / ``python3 edgebench-agent.pyz``: run, info, batch.

The ONE place where the agent's exceptions become exit codes (``agent.errors.ExitCode``) and where
logging is configured. Imports are lazy: ``--help`` and ``info`` import neither numpy nor a runtime;
``run`` and ``batch`` import them only in the worker processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from agent import __version__
from agent.daemon_client import WORKDIR
from agent.errors import AgentError, ExitCode, UsageError
from agent.job import MAX_THREADS, RUNTIME_CHOICES, JobSpec, parse_input_shapes
from agent.lock import LOCK_TIMEOUT
from agent.measure_options import add_measurement_options

EPILOG = """exit codes:
  0   every job finished with status ok
  1   a result document was produced, but some job's status is error / crashed / timeout
  2   usage error (bad arguments, missing file, bad job file)
  3   no TFLite runtime can be imported (or not the one asked for)
  4   the device lock could not be taken before its deadline (daemon: another daemon owns the workdir)
  5   batch: the disk filled up; finished documents are kept (the last one inline in its "done" event),
      the rest of the batch was not run
  6   daemon-client: no agent daemon answers on that workdir
  70  internal error (a bug in the agent)
"""


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() owns every exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgebench-agent", description="Measure TFLite models on this device: each job in "
                     "a fresh worker process with a deadline.", epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgebench-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the agent does (stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="measure one model (one job) and print its result document",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("model", metavar="MODEL.tflite")
    d = JobSpec(model="")  # the defaults of the options added here (the shared ones: agent.measure_options)
    run.add_argument("--threads", type=int, default=d.threads, help=f"interpreter threads, 1 to {MAX_THREADS} (default {d.threads})")
    add_measurement_options(run)  # --runs, --warmup, seconds, --seed, --repeat, --cpus, --inputs ...
    run.add_argument("--save-outputs", metavar="FILE.npz", help="write every output (dequantized + raw/...)")
    run.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES,
                     help="which runtime measures (auto: ai-edge-litert, then tflite-runtime, then tensorflow)")
    run.add_argument("--no-xnnpack", action="store_true", help="run without the default XNNPACK delegate")
    run.add_argument("--cooldown", type=float, default=d.cooldown,
                     help=f"pause this long between the worker processes, seconds ({d.cooldown:g})")
    run.add_argument("--timeout", type=float, default=d.timeout,
                     help=f"deadline of the worker, seconds ({d.timeout:g})")
    run.add_argument("--json", action="store_true", help="print the result document as JSON")

    info = sub.add_parser("info", help="this device's environment and every runtime it can load")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--workdir", default=".", help="report the free disk space of this folder (.)")
    info.add_argument("--runtime", choices=RUNTIME_CHOICES, default=None,
                      help="import-check only this runtime (auto: the first in discovery order that imports); "
                      "by default every installed runtime is import-checked")

    batch = sub.add_parser("batch", help="run a JSON list of jobs under the device lock",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("jobs", metavar="JOBS.json", help="the job list; - reads it from the first line of "
                       "standard input")
    batch.add_argument("--out", required=True, metavar="DIR", help="write DIR/<id>.json per job")
    batch.add_argument("--lock", metavar="PATH", help="flock this file while the batch runs")
    batch.add_argument("--lock-timeout", type=float, default=LOCK_TIMEOUT,
                       help=f"wait this long for the lock ({LOCK_TIMEOUT:g})")
    batch.add_argument("--shuffle-seed", type=int, help="shuffle the job order with this seed")
    batch.add_argument("--cooldown", type=float, default=0.0, help="sleep this long between jobs (0; a job's "
                       "own cooldown wins when longer)")
    batch.add_argument("--cpus", metavar="LIST|big|little|all", help="pin the jobs that do not say otherwise "
                       "(job key cpus) to these CPUs")
    batch.add_argument("--stop-on-stdin-eof", action="store_true",
                       help="stop (like Ctrl-C) when standard input closes: the controller keeps it open, so "
                       "an SSH session that drops or a controller that gives up stops the batch and frees "
                       "the device lock")
    batch.add_argument("--inline", action="store_true",
                       help="also put each result document into its \"done\" event (\"document\")")

    daemon = sub.add_parser("daemon", help="run the agent daemon: a job queue on a Unix socket (mode 0600) in "
                            "WORKDIR/daemon; it never listens on the network")
    daemon.add_argument("--workdir", default=WORKDIR, help=f"its workdir ({WORKDIR})")
    daemon.add_argument("--lock", metavar="PATH", help="the device lock taken per job (default WORKDIR/lock, "
                        "the one fleet runs give `batch --lock`)")
    daemon.add_argument("--detach", action="store_true", help="start it in the background unless one already "
                        "answers, wait until it does, print its status")
    client = sub.add_parser("daemon-client", help="talk to the agent daemon: status, submit, result, cancel, "
                            "watch, stop (JSON on stdout)", epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    from agent import daemon_client

    daemon_client.add_arguments(client)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agent import runtimes
    from agent.job import JobSpec
    from agent.regular_file import NotRegularFile, check_regular
    from agent.runner import run_job
    from agent.summary import job_summary

    for label, path in (("model", args.model), ("--inputs", args.inputs)):
        try:
            if path is not None:
                check_regular(path)
        except NotRegularFile as exc:
            raise UsageError(f"{label} file {exc}") from None
    runtimes.choose(args.runtime)  # NoRuntimeError (exit 3) before starting a worker
    delegate, delegate_options = None, {}
    if args.delegate:
        from agent.delegation import parse_spec

        try:
            delegate, delegate_options = parse_spec(args.delegate)
        except ValueError as exc:
            raise UsageError(f"--delegate: {exc}") from exc
        delegate = str(Path(delegate).resolve()) if Path(delegate).exists() else delegate
    spec = JobSpec(model=str(Path(args.model).resolve()), id=Path(args.model).stem, threads=args.threads,
                   runtime=args.runtime, xnnpack=not args.no_xnnpack, warmup=args.warmup,
                   warmup_min_seconds=args.warmup_min_seconds, runs=args.runs, min_seconds=args.min_seconds,
                   max_seconds=args.max_seconds, timeout=args.timeout, seed=args.seed,
                   inputs=str(Path(args.inputs).resolve()) if args.inputs else None,
                   input_shapes=parse_input_shapes(args.input_shape),
                   save_outputs=str(Path(args.save_outputs).resolve()) if args.save_outputs else None,
                   cpus=args.cpus, repeat=args.repeat, cooldown=args.cooldown, run_delay=args.run_delay,
                   delegate=delegate, delegate_options=delegate_options)
    spec.validate()
    doc = run_job(spec)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        sys.stdout.write(job_summary(doc) + "\n")
    return _exit_code(doc)


def _exit_code(doc: dict) -> int:
    if (doc.get("error") or {}).get("kind") == "no_runtime":
        return ExitCode.NO_RUNTIME
    return ExitCode.OK if doc["status"] == "ok" else ExitCode.JOB_FAILED


def _cmd_info(args: argparse.Namespace) -> int:
    from agent.info import collect, summary

    doc = collect(args.workdir, runtime=args.runtime)
    sys.stdout.write((json.dumps(doc, indent=1) if args.json else summary(doc)) + "\n")
    return ExitCode.OK if any(r["ok"] for r in doc["runtimes"]) else ExitCode.NO_RUNTIME


def _cmd_batch(args: argparse.Namespace) -> int:
    from agent.batch import STDIN, BatchOptions, read_jobs_line, run_batch

    def emit(event: dict) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    from agent.job import check_seconds

    check_seconds("--lock-timeout", args.lock_timeout)
    check_seconds("--cooldown", args.cooldown)
    jobs_text = read_jobs_line() if args.jobs == STDIN else None  # before the EOF watcher reads stdin
    if args.stop_on_stdin_eof:
        _watch_stdin()
    options = BatchOptions(jobs_file=args.jobs, out_dir=args.out, lock=args.lock,
                           lock_timeout=args.lock_timeout, shuffle_seed=args.shuffle_seed,
                           cooldown=args.cooldown, cpus=args.cpus, jobs_text=jobs_text, inline=args.inline)
    docs = run_batch(options, emit)
    _BATCH_DONE.set()
    # A job the device cannot run (no_runtime included) is data in its document: 1, never 3, for batch.
    return ExitCode.OK if all(d["status"] == "ok" for d in docs) else ExitCode.JOB_FAILED


def _cmd_daemon(args: argparse.Namespace) -> int:
    from agent import daemon_client

    if args.detach:
        daemon_client.print_line(json.dumps(daemon_client.start_detached(args.workdir, args.lock)))
        return ExitCode.OK
    from agent.daemon import Daemon, DaemonOptions

    logging.getLogger("agent.daemon").setLevel(logging.INFO)
    return Daemon(DaemonOptions(workdir=args.workdir, lock=args.lock)).serve()


def _cmd_daemon_client(args: argparse.Namespace) -> int:
    from agent import daemon_client

    return daemon_client.run(args, daemon_client.print_line)


COMMANDS = {"run": _cmd_run, "info": _cmd_info, "batch": _cmd_batch, "daemon": _cmd_daemon,
            "daemon-client": _cmd_daemon_client}


_BATCH_DONE = threading.Event()  #: set once the batch is done: a late EOF must not turn its result into 130


def _watch_stdin() -> None:
    """Send this process SIGHUP (handled like Ctrl-C) once standard input reaches EOF.

    Reads the file descriptor directly (``os.read``): a daemon thread blocked inside ``sys.stdin``'s
    buffered reader would abort the interpreter at exit."""
    import os

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass  # a closed or broken stdin means the same as EOF: the controller is gone
        if not _BATCH_DONE.is_set():
            os.kill(os.getpid(), signal.SIGHUP)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list | None = None) -> int:
    """Parse ``argv`` (default sys.argv[1:]), run the command, return its exit code."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return ExitCode.USAGE
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s agent: %(message)s", stream=sys.stderr)
    if not args.command:
        build_parser().print_help(sys.stderr)
        return ExitCode.USAGE
    # SIGTERM / SIGHUP (a controller giving up, an SSH session closing) unwind like Ctrl-C: the running
    # worker's process group is killed, the device lock released, finished documents kept.
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _interrupt)
    try:
        return int(COMMANDS[args.command](args))
    except AgentError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: the running worker was killed; finished results are kept\n")
        return ExitCode.INTERRUPTED
    except Exception:  # a bug: say so with the traceback, exit 70
        logging.getLogger("agent").exception("internal error (a bug in the agent)")
        return ExitCode.INTERNAL
