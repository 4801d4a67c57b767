"""The agent daemon's on-disk state: the queue of submitted jobs and the journal of finished ones.

Layout under ``<workdir>/daemon/`` (mode 0700, owned by the daemon's user)::

  jobs/<id>.json                  a submitted job {"id", "seq", "submitted", "spec"}; written and fsync'd
                                  BEFORE the submit is acknowledged, removed once the job is journaled
  running/<id>.json               the job being measured {"id", "worker_pid", "started"}; written when its
                                  worker started, removed after the job is journaled
  journal/<cursor>.<id>.json      a finished job's result document (with a ``daemon`` key: cursor and
                                  submitted / started / finished times); fsync'd BEFORE anyone is told
  scratch/                        the workers' per-job scratch folders

The cursor is the journal's sequence number (1, 2, ...); a reader asks for "everything after cursor N".
Every write is a temporary file + fsync + rename + fsync of the folder, so after a crash (SIGKILL, power
loss) a file is either whole or absent, and the order "journal, then un-queue" makes recovery simple:

* a job with a journal entry is finished, whatever else is left of it (the leftovers are removed);
* a job with a ``running`` marker and no journal entry was being measured when the daemon died. It is
  journaled as ``crashed`` (error kind ``daemon_died``) and NOT re-queued: the daemon cannot tell a
  ``kill -9`` from the OOM killer or a board that reboots under that very model, and re-running it
  automatically could loop forever; a crashed row with its reason is honest and visible, and the
  controller (or the user) may submit the job again under a new id. Its orphaned worker is killed first;
* a job with only ``jobs/<id>.json`` never started: it stays queued, in submission order.

Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from agent import probes, schema
from agent.job import JobSpec

_JOURNAL_NAME = re.compile(r"^(\d{8,})\.(.+)\.json$")
_ORPHAN_WAIT_S = 10.0


def write_durable(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` so that after any crash the file is whole or absent: temporary
    file, fsync, rename, fsync of the folder. Raises OSError (e.g. ENOSPC) with nothing half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(data, allow_nan=False, default=schema._jsonable))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class DaemonStore:
    """The queue and the journal of one daemon workdir. Not thread-safe: the daemon holds its own mutex
    around every call. Raises OSError when the disk refuses a write (nothing is acknowledged then)."""

    def __init__(self, state_dir: Path):
        self.root = Path(state_dir)
        self.jobs, self.running, self.journal = self.root / "jobs", self.root / "running", self.root / "journal"
        self.scratch = self.root / "scratch"
        self.queued: dict[str, dict] = {}  #: id -> {"id", "seq", "submitted", "spec"}, submission order
        self.finished: dict[str, tuple[int, str]] = {}  #: id -> (cursor, journal file name)
        self._seq = 0

    # ---- start-up ----------------------------------------------------------------------------------
    def open(self) -> list[str]:
        """Create the folders, read the journal and the queue, recover what a dead daemon left behind.
        Returns the ids journaled as ``crashed`` (``daemon_died``) by this recovery."""
        for folder in (self.root, self.jobs, self.running, self.journal, self.scratch):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for folder in (self.jobs, self.running, self.journal):
            for tmp in folder.glob(".*.tmp"):  # a write cut short by a crash
                tmp.unlink(missing_ok=True)
        for path in self.journal.glob("*.json"):
            match = _JOURNAL_NAME.match(path.name)
            if match:
                self.finished[match.group(2)] = (int(match.group(1)), path.name)
        records = [r for r in (_read(p) for p in self.jobs.glob("*.json")) if r and "id" in r]
        for record in sorted(records, key=lambda r: r.get("seq", 0)):
            self._seq = max(self._seq, int(record.get("seq", 0)))
            if record["id"] not in self.finished:
                self.queued[record["id"]] = record
        crashed = []
        for marker_path in self.running.glob("*.json"):
            marker = _read(marker_path) or {"id": marker_path.stem}
            job_id = marker.get("id", marker_path.stem)
            _kill_orphan(marker.get("worker_pid"))
            if job_id not in self.finished and job_id in self.queued:
                self._journal_daemon_died(self.queued[job_id], marker)
                crashed.append(job_id)
            marker_path.unlink(missing_ok=True)
        for job_id in [j for j in list(self.queued) if j in self.finished]:
            self._unqueue(job_id)
        for path in self.jobs.glob("*.json"):  # finished jobs whose queue file outlived their journal entry
            if path.stem in self.finished:
                path.unlink(missing_ok=True)
        for leftover in self.scratch.iterdir():  # scratch of workers that died with their daemon
            shutil.rmtree(leftover, ignore_errors=True)
        return crashed

    def _journal_daemon_died(self, record: dict, marker: dict) -> None:
        spec = record["spec"]
        doc = schema.new_document(spec, spec.get("model"), probes.environment())
        schema.set_error(doc, "crashed", "daemon_died",
                         "the agent daemon stopped (killed, out of memory, or the device rebooted) while this job "
                         "was measuring, so it has no measurement; it was not re-run automatically (the same "
                         "cause could stop the daemon again): submit it again under a new id to measure it")
        self.finish(record["id"], doc, started=marker.get("started"))

    # ---- queue ---------------------------------------------------------------------------------------
    def state_of(self, job_id: str) -> str | None:
        """``finished`` / ``queued`` / None (unknown). The daemon knows which queued job is running."""
        if job_id in self.finished:
            return "finished"
        return "queued" if job_id in self.queued else None

    def spec_of(self, job_id: str) -> dict | None:
        """The spec (dict) a known job was submitted with, or None."""
        if job_id in self.queued:
            return self.queued[job_id]["spec"]
        doc = self.document(job_id)
        return doc.get("job") if doc else None

    def submit(self, spec: JobSpec, now: float) -> None:
        """Queue ``spec`` durably (fsync'd before this returns). The caller checked it is new."""
        self._seq += 1
        record = {"id": spec.id, "seq": self._seq, "submitted": now, "spec": spec.to_dict()}
        write_durable(self.jobs / f"{spec.id}.json", record)
        self.queued[spec.id] = record

    def next_queued(self) -> dict | None:
        """The oldest queued record (submission order), or None."""
        return next(iter(self.queued.values()), None)

    def mark_running(self, job_id: str, worker_pid: int, started: float) -> None:
        write_durable(self.running / f"{job_id}.json", {"id": job_id, "worker_pid": worker_pid,
                                                         "started": started})

    def clear_running(self, job_id: str) -> None:
        """Forget the running marker of a job that goes back to the queue (the daemon is stopping)."""
        (self.running / f"{job_id}.json").unlink(missing_ok=True)

    # ---- journal -------------------------------------------------------------------------------------
    def finish(self, job_id: str, doc: dict, started: float | None, ended: float | None = None) -> int:
        """Journal ``doc`` as job ``job_id``'s result (durably), then un-queue the job. Returns its cursor.
        ``doc["daemon"]`` gets the cursor and the times (unix s): submitted, started / ended (the worker's
        life, under the device lock; None when it never ran), journaled."""
        record = self.queued.get(job_id, {})
        cursor = self.cursor + 1
        doc["daemon"] = {"cursor": cursor, "submitted": record.get("submitted"), "started": started,
                         "ended": ended, "journaled": time.time()}
        name = f"{cursor:08d}.{job_id}.json"
        write_durable(self.journal / name, doc)
        self.finished[job_id] = (cursor, name)
        (self.running / f"{job_id}.json").unlink(missing_ok=True)
        self._unqueue(job_id)
        return cursor

    def _unqueue(self, job_id: str) -> None:
        self.queued.pop(job_id, None)
        (self.jobs / f"{job_id}.json").unlink(missing_ok=True)

    @property
    def cursor(self) -> int:
        """The journal's last cursor (0 when empty)."""
        return max((c for c, _ in self.finished.values()), default=0)

    def journal_path(self, job_id: str) -> Path | None:
        entry = self.finished.get(job_id)
        return self.journal / entry[1] if entry else None

    def document(self, job_id: str) -> dict | None:
        path = self.journal_path(job_id)
        return _read(path) if path else None

    def since(self, cursor: int) -> list[dict[str, Any]]:
        """``{"id", "cursor", "file"}`` of every journal entry after ``cursor``, oldest first."""
        rows = [{"id": job_id, "cursor": c, "file": str(self.journal / name)}
                for job_id, (c, name) in self.finished.items() if c > cursor]
        return sorted(rows, key=lambda row: row["cursor"])


def _kill_orphan(pid: object) -> None:
    """Kill the process group of a worker whose daemon died, if that pid is still an agent worker (checked
    in /proc, so a reused pid is left alone), and wait (bounded) until it is gone."""
    if not isinstance(pid, int) or pid <= 1:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return  # gone (or no /proc: then its own alarm ends it, and it holds the device lock till then)
    if b"agent.worker" not in cmdline:
        return
    try:
        os.killpg(pid, signal.SIGKILL)  # a worker leads its own session
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + _ORPHAN_WAIT_S
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:  # it is no child of ours, so it is reaped by init; a zombie counts as gone
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return
        except OSError:
            return
        time.sleep(0.05)
