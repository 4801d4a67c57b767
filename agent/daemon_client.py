"""Talking to the agent daemon over its Unix socket: the wire format and the ``daemon-client`` commands.

Wire format: the client sends ONE request, a JSON object on one line (``{"op": "status"}``); the daemon
answers with one JSON line, or for ``watch`` with a line per event until the last (``"end": true``). A
refusal is ``{"error": {"kind": "usage" | "busy" | "internal", "message": ...}}`` and becomes the
matching AgentError here. The socket is ``<workdir>/daemon/daemon.sock``; nothing listens on the network.

``python -m agent daemon-client --workdir W status | submit JOBS.json | result [JOB] [--since N] |
cancel JOB | watch [--since N] [--ids a,b | --prefix P] | forget (--ids a,b | --prefix P) | stop`` prints the answer as JSON (one line per event for
``watch``). Standard library only.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from agent.errors import AgentError, BusyError, ExitCode, UsageError

SOCKET_NAME = "daemon.sock"
MAX_LINE = 64 << 20  #: a request or answer line longer than this is refused
_SUN_PATH_MAX = 100  #: sockaddr_un holds 108 bytes; longer paths go through /proc/self/fd


class NoDaemonError(AgentError):
    """No daemon answers on this workdir's socket."""

    exit_code = ExitCode.NO_DAEMON


WORKDIR = "~/.cache/edgebench"  #: a device's work folder by default (agent, models, runs, lock, daemon)


def state_dir(workdir: str) -> Path:
    """The daemon's state folder of ``workdir`` (``~`` expanded)."""
    return Path(os.path.expanduser(workdir)) / "daemon"


@contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits sockaddr_un: the path itself, or for a long one
    ``/proc/self/fd/<folder fd>/<name>`` (the folder held open for the block)."""
    if len(os.fsencode(str(path))) < _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def send_line(sock: socket.socket, message: dict) -> None:
    sock.sendall(json.dumps(message, allow_nan=False).encode() + b"\n")


def read_lines(sock: socket.socket) -> Iterator[dict]:
    """JSON objects, one per line, until the peer closes. Raises UsageError for a line that is not a JSON
    object or is longer than MAX_LINE."""
    buf = b""
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            if buf.strip():
                raise UsageError("the daemon connection closed in the middle of a message")
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield _decode(line)
        if len(buf) > MAX_LINE:
            raise UsageError(f"a message longer than {MAX_LINE} bytes")


def _decode(line: bytes) -> dict:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise UsageError(f"not a JSON message: {exc}") from exc
    if not isinstance(message, dict):
        raise UsageError(f"a message must be a JSON object, got {type(message).__name__}")
    return message


def _raise_refusal(answer: dict) -> dict:
    error = answer.get("error")
    if not error:
        return answer
    kind, message = error.get("kind"), error.get("message", "")
    cls = {"usage": UsageError, "busy": BusyError}.get(kind, AgentError)
    raise cls(f"the daemon refused: {message}")


def stream(workdir: str, request: dict, timeout: float | None = 30.0) -> Iterator[dict]:
    """Send ``request`` to the daemon of ``workdir`` and yield its answer lines (refusals raised).

    Raises NoDaemonError when nothing listens there, UsageError/BusyError for a refusal, TimeoutError
    when an answer line takes longer than ``timeout`` (None: wait as long as it takes)."""
    path = state_dir(workdir) / SOCKET_NAME
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        with socket_address(path) as address:
            try:
                sock.connect(address)
            except PermissionError as exc:
                raise UsageError(f"the agent daemon's socket {path} belongs to another user (mode 0600): only "
                                 "the user it runs as may use it") from exc
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise NoDaemonError(f"no agent daemon is running on {path.parent.parent} ({path}: "
                                    f"{exc.strerror}); start it with `edgebench-agent daemon --workdir "
                                    f"{workdir}`") from exc
        try:
            send_line(sock, request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon refused before reading (e.g. a peer it does not serve): its answer is queued
        for answer in read_lines(sock):
            yield _raise_refusal(answer)
    finally:
        sock.close()


def request(workdir: str, message: dict, timeout: float = 30.0) -> dict:
    """One request, one answer (see :func:`stream` for what it raises)."""
    for answer in stream(workdir, message, timeout):
        return answer
    raise AgentError("the daemon closed the connection without answering (see its log)")


# ---- the `daemon-client` command -------------------------------------------------------------------

def add_arguments(parser) -> None:
    """The ``daemon-client`` sub-commands (argparse)."""
    parser.add_argument("--workdir", default=WORKDIR, help=f"the daemon's workdir ({WORKDIR})")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    parser_class=type(parser))
    actions.add_parser("status", help="queue, running job, heartbeat (temperature, load, queue, uptime)")
    submit = actions.add_parser("submit", help="queue the jobs of a JSON job file (same format as batch); "
                                "a job id the daemon already knows is not queued twice")
    submit.add_argument("jobs", metavar="JOBS.json")
    result = actions.add_parser("result", help="a job's state and result document, or every result after "
                                "a cursor")
    result.add_argument("job", nargs="?", help="the job id")
    result.add_argument("--since", type=int, help="every finished job after this journal cursor (0: all)")
    cancel = actions.add_parser("cancel", help="cancel a queued or running job (journaled as error kind "
                                "'cancelled')")
    cancel.add_argument("job")
    watch = actions.add_parser("watch", help="print a line per finished job (and a heartbeat line now and "
                               "then) until the listed jobs are all finished")
    watch.add_argument("--since", type=int, default=0, help="start after this journal cursor (0)")
    watch.add_argument("--ids", default="", help="comma-separated job ids to wait for (default: the whole "
                       "queue as it is now)")
    watch.add_argument("--prefix", help="wait for every job the daemon knows whose id starts with this (a fleet "
                       "run's jobs: '<run-id>.')")
    watch.add_argument("--heartbeat", type=float, default=10.0, help="seconds between heartbeat lines (10)")
    forget = actions.add_parser("forget", help="delete the journal entries of finished jobs whose results were "
                                "collected (the daemon then no longer knows them)")
    forget.add_argument("--ids", help="comma-separated job ids")
    forget.add_argument("--prefix", help="every finished job whose id starts with this")
    actions.add_parser("stop", help="stop the daemon: the running job is stopped and stays queued")


def run(args, out: Callable[[str], None]) -> int:
    """Carry out ``daemon-client ACTION``; print with ``out``. Returns the exit code (0; 1 for a job
    whose result is not there yet); raises NoDaemonError / UsageError / AgentError."""
    workdir = args.workdir
    if args.action == "submit":
        from agent.batch import load_jobs

        specs = load_jobs(args.jobs)
        for spec in specs:  # relative paths mean the caller's folder (the daemon's cwd is its workdir)
            for key in ("model", "inputs", "save_outputs"):
                value = getattr(spec, key)
                if value and not os.path.isabs(value):
                    setattr(spec, key, os.path.abspath(value))
        out(json.dumps(request(workdir, {"op": "submit", "jobs": [s.to_dict() for s in specs]})))
        return ExitCode.OK
    if args.action == "result":
        if (args.job is None) == (args.since is None):
            raise UsageError("result: give a JOB id or --since CURSOR (not both)")
        message = {"op": "result", "id": args.job} if args.job else {"op": "result", "since": args.since}
        answer = request(workdir, message)
        out(json.dumps(answer))
        return ExitCode.OK if args.job is None or answer.get("state") == "finished" else ExitCode.JOB_FAILED
    if args.action == "watch":
        ids = [i for i in args.ids.split(",") if i] or None
        for event in stream(workdir, {"op": "watch", "since": args.since, "ids": ids, "prefix": args.prefix,
                                      "heartbeat": args.heartbeat}, timeout=max(60.0, 3 * args.heartbeat)):
            out(json.dumps(event))
            if event.get("end"):
                return ExitCode.OK if event.get("complete") else ExitCode.JOB_FAILED
        raise NoDaemonError(f"the agent daemon of {workdir} closed the watch before its end (it stopped or "
                            "died); its journal keeps what finished: watch again once it runs")
    message = {"op": args.action}
    if args.action == "cancel":
        message["id"] = args.job
    if args.action == "forget":
        if bool(args.ids) == bool(args.prefix):
            raise UsageError("forget: give --ids or --prefix (not both)")
        message.update({"ids": args.ids.split(",")} if args.ids else {"prefix": args.prefix})
    out(json.dumps(request(workdir, message)))
    return ExitCode.OK


def start_detached(workdir: str, lock: str | None, python: str = sys.executable,
                   deadline_s: float = 30.0) -> dict:
    """Make sure a daemon serves ``workdir``: if none answers, start ``python <agent> daemon`` in its own
    session (log: ``<workdir>/daemon/daemon.log``) and wait until it answers. Returns its status with
    ``"started": bool`` (False: one was running already). Raises AgentError naming the log when it does
    not answer within ``deadline_s``."""
    import subprocess
    import time

    from agent.runner import agent_root

    try:
        return dict(request(workdir, {"op": "status"}), started=False)
    except NoDaemonError:
        pass
    folder = state_dir(workdir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    boot = (f"import sys; sys.path.insert(0, {agent_root()!r}); "
            "from agent.cli import main; sys.exit(main(sys.argv[1:]))")
    argv = [python, "-c", boot, "daemon", "--workdir", workdir] + (["--lock", lock] if lock else [])
    log_path = folder / "daemon.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file,
                                start_new_session=True, cwd=str(folder.parent))
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            return dict(request(workdir, {"op": "status"}), started=proc.poll() is None)
        except NoDaemonError:
            if proc.poll() not in (None, ExitCode.BUSY):  # BUSY: another start won the race; it will answer
                break
            time.sleep(0.1)
    raise AgentError(f"the agent daemon did not start on {workdir} (exit {proc.poll()}); see {log_path}")


def print_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
