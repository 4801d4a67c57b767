"""Run one job in a fresh worker process with a deadline, and classify how it ended.

Trust model: the runner trusts the worker's *document* only when the worker exited normally. A worker
killed by a signal is ``crashed`` (signal name + stderr tail); one past ``job.timeout`` is killed with
its whole process group and reported ``timeout``. In both cases the document is the worker's last
checkpoint (model and runtime known once loaded) or, failing that, one built here. The runner itself
imports only the standard library: a bad model can never take the agent process down.

The worker is started as ``python -c <boot> JOB RESULT`` where ``<boot>`` puts the folder (or
the .pyz zipapp) that holds the ``agent`` package first on sys.path, so it works the same from a
source tree, an installed package and ``edgebench-agent.pyz``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import agent
from agent import modelfile, probes, repeats, schema
from agent.job import JobSpec

STDERR_TAIL_CHARS = 3000
_KILL_GRACE_S = 10.0


@dataclass
class RunnerOptions:
    """How to start workers. Defaults suit the agent CLI; tests and the controller may override."""

    python: str = field(default_factory=lambda: sys.executable)  #: interpreter for the worker
    extra_env: dict = field(default_factory=dict)  #: added to the worker's environment
    tmp_root: str | None = None  #: where the per-job scratch folder goes (default: system temp)
    #: called with the worker's pid as soon as it started (the daemon records it to find an orphan)
    on_start: Callable[[int], None] | None = None
    #: file descriptors the worker inherits; the daemon passes its device-lock file so the lock stays
    #: held while an orphaned worker (its daemon SIGKILLed) still measures
    pass_fds: tuple = ()


def agent_root() -> str:
    """The sys.path entry that provides the ``agent`` package: a folder, or the .pyz archive."""
    archive = getattr(getattr(agent, "__loader__", None), "archive", None)
    if archive:
        return archive
    return str(Path(agent.__file__).resolve().parent.parent)


def worker_command(python: str, job_file: str, result_file: str) -> list:
    """argv that starts a worker for ``job_file`` writing ``result_file``."""
    # Straight to the worker (not through the CLI): no argparse / logging in the measured process.
    boot = (f"import sys; sys.path.insert(0, {agent_root()!r}); "
            "from agent.worker import main; sys.exit(main(sys.argv[1], sys.argv[2]))")
    return [python, "-c", boot, job_file, result_file]


def run_job(spec: JobSpec, options: RunnerOptions | None = None,
            sleep: Callable[[float], None] = time.sleep) -> dict:
    """Run ``spec`` in ``spec.repeat`` fresh worker processes, one after the other with ``spec.cooldown``
    seconds between them, and return the combined result document (schema_version 2; see
    :func:`agent.repeats.combine`).

    Never raises for a bad model, a crash or a hang: those are documents with status error / crashed /
    timeout. Raises OSError only when the worker cannot be started at all (e.g. ``options.python``
    does not exist) and KeyboardInterrupt after killing the worker.
    """
    options = options or RunnerOptions()
    docs = []
    for index in range(max(1, int(spec.repeat))):
        if index and spec.cooldown > 0:
            sleep(spec.cooldown)
        docs.append(_run_worker(spec, options))
    return repeats.combine(docs)


def _run_worker(spec: JobSpec, options: RunnerOptions) -> dict:
    """One worker process for ``spec``: its classified document."""
    scratch = Path(tempfile.mkdtemp(prefix="edgebench-job-", dir=options.tmp_root))
    try:
        job_file, result_file = scratch / "job.json", scratch / "result.json"
        job_file.write_text(json.dumps(spec.to_dict()))
        stderr_path = scratch / "stderr.txt"
        env = dict(os.environ, **options.extra_env)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        with open(stderr_path, "wb") as stderr, open(scratch / "stdout.txt", "wb") as stdout:
            proc = subprocess.Popen(worker_command(options.python, str(job_file), str(result_file)),
                                    stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env,
                                    start_new_session=True, pass_fds=options.pass_fds)
            if options.on_start is not None:
                try:
                    options.on_start(proc.pid)
                except BaseException:
                    _kill_group(proc)
                    raise
            timed_out = _wait(proc, spec.timeout)
        tail = _tail(stderr_path)
        return _document(spec, proc.returncode, timed_out, result_file, tail)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to ``timeout`` s; on expiry kill the worker's process group. Returns True if it expired."""
    try:
        proc.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return True
    except BaseException:  # KeyboardInterrupt: never leave a worker behind
        _kill_group(proc)
        raise


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker leads its own session (start_new_session)
    except ProcessLookupError:
        pass
    proc.wait(timeout=_KILL_GRACE_S)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - STDERR_TAIL_CHARS))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _read_document(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


_IDENTITY_CACHE: dict = {}  #: (path, size, mtime_ns) -> sha256: a batch hashes each model file once


def _document(spec: JobSpec, returncode: int, timed_out: bool, result_file: Path, tail: str) -> dict:
    """The job's document, classified, with the model file's sha256 and size (computed here in the
    parent, once per file, so the measuring worker spends no time hashing)."""
    doc = _classified(spec, returncode, timed_out, result_file, tail)
    model = Path(spec.model)
    try:
        stat = model.stat()
    except OSError:
        return doc  # a missing model: the document already says so
    key = (str(model.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _IDENTITY_CACHE:
        try:
            _IDENTITY_CACHE[key] = modelfile.sha256_of(model)
        except OSError:
            return doc  # unreadable / not a regular file: the worker's document already says so
    doc["model"].update(sha256=_IDENTITY_CACHE[key], bytes=stat.st_size)
    return doc


def _classified(spec: JobSpec, returncode: int, timed_out: bool, result_file: Path, tail: str) -> dict:
    doc = _read_document(result_file)
    stage = doc.pop("_stage", None) if doc else None
    if doc is not None and stage is None and not timed_out and returncode == 0:
        if doc.get("error") is not None and not doc["error"].get("stderr_tail"):
            doc["error"]["stderr_tail"] = tail
        return doc
    if doc is None:
        doc = _fallback_document(spec)
    where = "after loading the model (during inference)" if stage == "loaded" else "while loading the model"
    if timed_out:
        return schema.set_error(doc, "timeout", "timeout", f"the worker passed its deadline of {spec.timeout:g} s "
                                f"{where} and was killed with its process group; the runtime may hang on this "
                                "model, or raise the job's timeout / lower max_seconds", tail)
    if returncode < 0:
        name = _signal_name(-returncode)
        return schema.set_error(doc, "crashed", "signal", f"the worker was killed by {name} {where}; the runtime "
                                "crashed on this model (see stderr_tail); try another runtime or re-convert "
                                "the model", tail)
    return schema.set_error(doc, "error", "worker_failed", f"the worker exited with code {returncode} {where} "
                            "without writing a result; see stderr_tail", tail)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _fallback_document(spec: JobSpec) -> dict:
    """A document for a worker that died before its first checkpoint (stdlib only)."""
    doc = schema.new_document(spec.to_dict(), spec.model, probes.environment())
    doc["runtime"].update(name=None if spec.runtime == "auto" else spec.runtime, num_threads=spec.threads,
                          xnnpack_requested=spec.xnnpack)
    return doc
