"""A batch of jobs on one device: one at a time, each in its own worker, under the device lock.

``python -m agent batch JOBS.json --out DIR`` (see docs/internals.md); ``-`` instead of the file reads
the job list as the first line of standard input (the controller sends it with the command: no upload
of its own). Every job's document is written to ``DIR/<id>.json`` atomically as soon as the job ends, so
an interrupted batch keeps what finished; with ``inline`` the ``done`` event carries it too
(``"document"``), so the controller needs no download. Progress goes to ``emit`` as small dicts (the CLI
prints them as JSON lines). Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from agent import disk_full
from agent.cpus import check_placement
from agent.errors import DiskFullError, UsageError
from agent.job import JobSpec, check_job_id
from agent.lock import LOCK_TIMEOUT, DeviceLock
from agent.regular_file import NotRegularFile, open_regular
from agent.runner import RunnerOptions, run_job
from agent.schema import write_json_atomic

MAX_JOB_FILE_BYTES = 64 * 2**20  #: a job file is a few KiB per job


@dataclass
class BatchOptions:
    jobs_file: str
    out_dir: str
    lock: str | None = None  #: flock this file for the whole batch (None: no lock)
    lock_timeout: float = LOCK_TIMEOUT
    shuffle_seed: int | None = None  #: shuffle the job order with this seed (None: file order)
    cooldown: float = 0.0  #: seconds to sleep between two jobs (a job's own longer cooldown wins)
    cpus: str | None = None  #: placement of the jobs whose ``cpus`` is None
    runner: RunnerOptions = field(default_factory=RunnerOptions)
    jobs_text: str | None = None  #: the job list itself (read from stdin for ``-``), instead of the file
    inline: bool = False  #: put each document into its ``done`` event too


STDIN = "-"  #: the job-file argument that means "the first line of standard input"
MAX_JOBS_LINE = 64 << 20  #: bytes: a job list longer than this on stdin is refused


def read_jobs_line(fd: int = 0) -> str:
    """The first line of file descriptor ``fd`` (the job list the controller sends with the command),
    read with ``os.read`` so nothing after it is buffered away from a later EOF watcher. Raises
    UsageError when stdin ends before a newline or the line passes MAX_JOBS_LINE."""
    data = bytearray()
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            raise UsageError("standard input closed before a whole job list line arrived (job file '-')")
        data += chunk
        if len(data) > MAX_JOBS_LINE:
            raise UsageError(f"the job list on standard input is longer than {MAX_JOBS_LINE} bytes")
    return bytes(data.split(b"\n", 1)[0]).decode("utf-8", "replace")


def load_jobs(path: str, text: str | None = None) -> list:
    """The JobSpecs of a job file (a JSON list of objects), or of ``text`` when given (``path`` then only
    names it). Raises UsageError naming the file and the job when the file is unreadable, not a list,
    holds a bad job, or repeats an id."""
    if path == STDIN:
        path = "'-' (standard input)"
    try:
        if text is None:
            with open_regular(path) as fh:
                raw = fh.read(MAX_JOB_FILE_BYTES + 1)
        else:
            raw = text
    except NotRegularFile as exc:
        raise UsageError(f"job file {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read job file {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_JOB_FILE_BYTES:
        raise UsageError(f"job file {path} is larger than {MAX_JOB_FILE_BYTES // 2**20} MiB; check the path")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"job file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise UsageError(f"job file {path} must hold a JSON list of jobs, got {type(data).__name__}")
    specs, seen = [], set()
    for i, item in enumerate(data):
        try:
            spec = JobSpec.from_dict(item)
        except (UsageError, TypeError, ValueError) as exc:
            raise UsageError(f"job file {path}, job #{i}: {exc}") from exc
        try:
            check_job_id(spec.id)
        except UsageError as exc:
            raise UsageError(f"job file {path}, job #{i}: {exc}") from exc
        if spec.id in seen:
            raise UsageError(f"job file {path}: id {spec.id!r} is used twice; ids must be unique")
        seen.add(spec.id)
        specs.append(spec)
    return specs


def run_batch(options: BatchOptions, emit: Callable[[dict], None]) -> list:
    """Run every job of ``options.jobs_file``; return their documents in run order.

    Raises UsageError (bad job file, unwritable out dir) before any job runs, BusyError when the lock
    is not free within ``lock_timeout``. A failing job is a document, never an exception.
    """
    specs = load_jobs(options.jobs_file, options.jobs_text)
    if options.cpus is not None:
        check_placement(options.cpus)
        for spec in specs:
            spec.cpus = options.cpus if spec.cpus is None else spec.cpus
    out = Path(options.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {out}: {exc.strerror or exc}") from exc
    order = list(specs)
    if options.shuffle_seed is not None:
        random.Random(options.shuffle_seed).shuffle(order)
    with DeviceLock(options.lock, options.lock_timeout) if options.lock else contextlib.nullcontext():
        return _run_all(order, out, options, emit)


def _run_all(order: list, out: Path, options: BatchOptions, emit: Callable[[dict], None]) -> list:
    """Run ``order``; raise DiskFullError when the disk fills up (after emitting what was measured)."""
    docs = []
    for index, spec in enumerate(order):
        cooldown = max(options.cooldown, spec.cooldown)
        if index and cooldown > 0:
            time.sleep(cooldown)
        emit({"event": "start", "id": spec.id, "index": index, "total": len(order), "time": time.time()})
        try:
            doc = run_job(spec, options.runner)
        except OSError as exc:  # the worker's scratch folder could not be made or written
            if not disk_full.is_disk_full(exc):
                raise
            _disk_full(emit, exc.filename or options.runner.tmp_root or tempfile.gettempdir(), exc,
                       "preparing the job", spec.id, None)
        doc["batch"] = {"index": index, "total": len(order), "shuffle_seed": options.shuffle_seed,
                        "cooldown_s": cooldown}
        path = out / f"{spec.id}.json"
        try:
            write_json_atomic(path, doc)
        except OSError as exc:
            if not disk_full.is_disk_full(exc):
                raise
            _disk_full(emit, path, exc, "writing the result document", spec.id, doc)
        docs.append(doc)
        event = {"event": "done", "id": spec.id, "status": doc["status"], "file": str(path), "time": time.time()}
        if options.inline:
            event["document"] = doc
        emit(event)
    return docs


def _disk_full(emit: Callable[[dict], None], path: object, exc: OSError, what: str, job_id: str,
               doc: dict | None) -> None:
    """Report a full disk and stop the batch. A document that was measured but could not be written goes
    inline in its ``done`` event (``"file": null, "document": {...}``), so the controller keeps it; then
    a ``disk_full`` event carries the message. Raises DiskFullError (exit 5)."""
    text = disk_full.message(str(path), exc, what)
    if doc is not None:
        emit({"event": "done", "id": job_id, "status": doc["status"], "file": None, "document": doc,
              "time": time.time()})
    emit({"event": "disk_full", "id": job_id, "path": str(path), "free_kb": disk_full.free_kb(str(path)),
          "message": text, "time": time.time()})
    raise DiskFullError(text) from exc
