"""The agent daemon: a long-running agent that queues jobs on disk and measures them one at a time.

``python -m agent daemon --workdir W`` (foreground; systemd runs it so) or ``--detach`` (start it in the
background unless one already answers, wait until it does, print its status). Clients talk to it with
``python -m agent daemon-client`` (:mod:`agent.daemon_client`, which also documents the wire format).

Trust model. The daemon listens ONLY on the Unix socket ``<workdir>/daemon/daemon.sock``, created with
mode 0600 inside a 0700 folder, and additionally refuses a peer whose uid (SO_PEERCRED) is neither its
own nor root's: whoever can reach the socket could already run anything as this user. It never opens a
network port. What it runs is fixed: JobSpecs (a model file, threads, runtime, measurement settings),
each measured by the agent's own worker exactly as ``agent batch`` does; no shell command, no code from
a request. A job's paths (model, inputs, save_outputs) are used as given, with the daemon user's rights.

Guarantees. A submitted job is on disk (fsync'd) before the submit is acknowledged; a result is in the
journal (fsync'd) before any client can see it; a job id the daemon already knows is not queued again
(resubmitting after a dropped link is safe). Each job runs in a fresh worker under the device lock
(``<workdir>/lock``, the one ``agent batch`` takes), taken per job, so a daemon and a one-shot batch
never measure at the same time; the worker inherits the lock's file, so the lock stays held while an
orphaned worker measures. After a crash, :mod:`agent.daemon_store` says what happens to each job (a job
that was running is journaled ``crashed`` / ``daemon_died``, not re-run). ``stop`` and SIGTERM stop the
running worker and leave that job queued (the daemon knows it was interrupted, so it runs again after a
restart); a second daemon on the same workdir is refused (a flock on ``daemon.pid``, freed by the kernel
when its holder dies, so a SIGKILLed daemon's pid file does not block).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import agent
from agent import probes, schema
from agent.daemon_client import SOCKET_NAME, WORKDIR, socket_address, state_dir
from agent.daemon_requests import Requests
from agent.daemon_store import DaemonStore
from agent.errors import BusyError, UsageError
from agent.job import JobSpec
from agent.lock import DeviceLock
from agent.runner import RunnerOptions, agent_root, run_job

log = logging.getLogger("agent.daemon")
_ACCEPT_POLL_S = 0.5


@dataclass
class DaemonOptions:
    workdir: str = WORKDIR
    lock: str | None = None  #: the device lock (default <workdir>/lock, as the fleet's batch uses)
    lock_poll: float = 0.5  #: seconds between two tries of a busy device lock
    runner: RunnerOptions = field(default_factory=RunnerOptions)

    @property
    def root(self) -> Path:
        return Path(os.path.expanduser(self.workdir))

    @property
    def lock_path(self) -> str:
        return os.path.expanduser(self.lock) if self.lock else str(self.root / "lock")


class Daemon(Requests):
    """One daemon on one workdir. ``serve()`` blocks until ``stop`` (a request, SIGTERM or Ctrl-C)."""

    def __init__(self, options: DaemonOptions):
        self.options = options
        self.state = state_dir(options.workdir)
        self.store = DaemonStore(self.state)
        self.cond = threading.Condition()  #: guards the store and the fields below
        self.started = time.time()
        #: the file this daemon's code came from, resolved at start (a symlink may move on later)
        self.agent_real = os.path.realpath(agent_root())
        self.stopping = False
        self.current: dict | None = None  #: {"id", "started", "worker_pid", "cancel"} of the running job
        self.waiting_for_lock: str | None = None
        self.problem: str | None = None
        self.last_ended: float | None = None  #: when the last job's worker ended (for the next one's cooldown)

    # ---- life cycle -------------------------------------------------------------------------------------
    def serve(self) -> int:
        """Take the workdir, recover, listen, run jobs until stopped. Returns 0. Raises BusyError when
        another daemon serves this workdir, UsageError when the workdir is unusable."""
        try:
            self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
            pid_file = open(self.state / "daemon.pid", "a+")  # noqa: SIM115 - held for the daemon's life
        except OSError as exc:
            raise UsageError(f"cannot use the daemon folder {self.state}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(pid_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid_file.seek(0)
            holder = pid_file.read().strip() or "?"
            pid_file.close()
            raise BusyError(f"another agent daemon (pid {holder}) serves {self.options.root}; talk to it with "
                            "`daemon-client`, or stop it first") from None
        pid_file.seek(0)
        pid_file.truncate()
        pid_file.write(f"{os.getpid()}\n")
        pid_file.flush()
        try:
            try:
                crashed = self.store.open()
            except OSError as exc:
                raise UsageError(f"cannot use the daemon folder {self.state}: {exc.strerror or exc}") from exc
            if crashed:
                log.warning("journaled as crashed (the daemon died while they ran): %s", ", ".join(crashed))
            listener = self._listen()
            try:
                return self._loop(listener)
            finally:
                listener.close()
                (self.state / SOCKET_NAME).unlink(missing_ok=True)
        finally:
            pid_file.close()

    def _listen(self) -> socket.socket:
        path = self.state / SOCKET_NAME
        path.unlink(missing_ok=True)  # we hold daemon.pid: a socket file here is a dead daemon's
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window in which others may connect
        try:
            with socket_address(path) as address:
                listener.bind(address)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        listener.listen(16)
        listener.settimeout(_ACCEPT_POLL_S)
        return listener

    def _loop(self, listener: socket.socket) -> int:
        previous = {s: signal.signal(s, lambda *_: self.request_stop("signal")) for s in (signal.SIGTERM,
                                                                                         signal.SIGHUP)}
        runner = threading.Thread(target=self._run_jobs, name="daemon-jobs", daemon=True)
        runner.start()
        log.info("agent daemon %s (pid %d) serving %s", agent.__version__, os.getpid(), self.state / SOCKET_NAME)
        try:
            while not self.stopping:
                try:
                    conn, _ = listener.accept()
                except socket.timeout:
                    continue
                except KeyboardInterrupt:
                    self.request_stop("interrupted")
                    break
                threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()
        except KeyboardInterrupt:
            self.request_stop("interrupted")
        finally:
            runner.join(timeout=30)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("agent daemon stopped")
        return 0

    def request_stop(self, why: str) -> None:
        """Stop accepting, stop the running worker (its job stays queued), end ``serve``."""
        with self.cond:
            if not self.stopping:
                log.info("stopping (%s)", why)
            self.stopping = True
            self._kill_current()
            self.cond.notify_all()

    # ---- running jobs -----------------------------------------------------------------------------------
    def _run_jobs(self) -> None:
        """The job loop (its own thread): the oldest queued job, one at a time, until stopping. A journal
        that cannot be written (disk full) leaves the job queued and is retried with a growing pause; a
        bug journals that one job as ``internal`` and the loop goes on."""
        backoff = 1.0
        while True:
            with self.cond:
                record = None if self.stopping else self.store.next_queued()
                if self.stopping:
                    return
                if record is None:
                    self.cond.wait(timeout=1.0)
                    continue
                self.current = {"id": record["id"], "started": None, "worker_pid": None, "cancel": False}
            try:
                self._run_one(record)
                backoff = 1.0
            except OSError as exc:  # the journal could not be written (disk full): nothing acknowledged
                self.problem = f"cannot write the journal in {self.state}: {exc.strerror or exc}"
                log.error("%s; retrying in %.0f s", self.problem, backoff)
                self._pause(backoff)
                backoff = min(60.0, backoff * 2)
            except Exception as exc:
                log.exception("job %s: internal error", record["id"])
                self._journal_bug(record, exc)
            finally:
                with self.cond:
                    self.current = None
                    self.waiting_for_lock = None
                    self.cond.notify_all()

    def _run_one(self, record: dict) -> None:
        job_id = record["id"]
        lock = self._take_lock()
        if lock is None:  # stopping, or cancelled while waiting for the lock
            with self.cond:
                if self.current["cancel"] and not self.stopping:
                    self._journal_cancelled(record, started=None)
            return
        try:
            spec = JobSpec.from_dict(record["spec"])
            self._cool_down(spec.cooldown)
            runner = RunnerOptions(python=self.options.runner.python, extra_env=self.options.runner.extra_env,
                                   tmp_root=str(self.store.scratch), on_start=self._on_start,
                                   pass_fds=(lock.fileno(),))
            log.info("job %s: start", job_id)
            try:
                doc = run_job(spec, runner)
                ended = time.time()  # before the lock is released: measuring windows never overlap
            except OSError as exc:
                ended = time.time()
                doc = schema.new_document(spec.to_dict(), spec.model, probes.environment())
                schema.set_error(doc, "error", "worker_failed", f"the worker could not be started with "
                                 f"{runner.python}: {exc.strerror or exc}; check the daemon's python")
        finally:
            lock.release()
        with self.cond:
            current = self.current
            if current["cancel"]:
                self._journal_cancelled(record, started=current["started"], doc=doc, ended=ended)
            elif self.stopping:
                self.store.clear_running(job_id)  # interrupted on purpose: it runs again after a restart
                log.info("job %s: stopped with the daemon; stays queued", job_id)
            else:
                cursor = self.store.finish(job_id, doc, started=current["started"], ended=ended)
                self.problem = None
                log.info("job %s: %s (cursor %d)", job_id, doc["status"], cursor)
            self.current = None  # in the same critical section: status never shows a journaled job running
            self.last_ended = ended

    def _cool_down(self, seconds: float) -> None:
        """The job's ``cooldown`` after the previous job ended (as ``agent batch`` pauses between jobs)."""
        remaining = self.last_ended + seconds - time.time() if self.last_ended else 0.0
        if remaining > 0:
            self._pause(remaining)

    def _pause(self, seconds: float) -> None:
        with self.cond:
            if not self.stopping:
                self.cond.wait(timeout=seconds)

    def _journal_bug(self, record: dict, exc: Exception) -> None:
        spec = record.get("spec") or {}
        doc = schema.new_document(spec, spec.get("model"), probes.environment())
        schema.set_error(doc, "error", "internal", f"agent daemon bug: {type(exc).__name__}: {exc}")
        try:
            with self.cond:
                self.store.finish(record["id"], doc, started=None)
        except OSError as write_error:
            self.problem = f"cannot write the journal in {self.state}: {write_error.strerror or write_error}"
            self._pause(5.0)

    def _take_lock(self) -> DeviceLock | None:
        """The device lock, tried every ``lock_poll`` s for as long as it takes; None when the job was
        cancelled or the daemon is stopping meanwhile. ``status`` shows who holds it while we wait."""
        while True:
            lock = DeviceLock(self.options.lock_path, timeout=0)
            try:
                lock.acquire()
                return lock
            except BusyError:
                holder = lock.holder()
            with self.cond:
                self.waiting_for_lock = f"the device lock {lock.path} is held by {holder}"
                if self.stopping or self.current["cancel"]:
                    return None
                self.cond.wait(timeout=self.options.lock_poll)
                self.waiting_for_lock = None

    def _on_start(self, pid: int) -> None:
        """A worker of the current job started (one per repeat): record its pid; ``started`` stays the
        first worker's start, so the job's window covers all of its repeats."""
        with self.cond:
            started = self.current["started"] or time.time()
            self.current.update(worker_pid=pid, started=started)
            self.store.mark_running(self.current["id"], pid, started)
            if self.current["cancel"] or self.stopping:
                self._kill_current()

    def _kill_current(self) -> None:
        pid = self.current["worker_pid"] if self.current else None
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _journal_cancelled(self, record: dict, started: float | None, doc: dict | None = None,
                           ended: float | None = None) -> None:
        spec = record["spec"]
        if doc is None:
            doc = schema.new_document(spec, spec.get("model"), probes.environment())
        what = "while it was measuring (its worker was killed)" if started else "before it started"
        schema.set_error(doc, "error", "cancelled", f"cancelled with `daemon-client cancel` {what}; its "
                         "measurement, if any, is discarded: submit it again under a new id to measure it")
        self.store.finish(record["id"], doc, started=started, ended=ended)
