"""A device's jobs through its agent daemon (``daemon: true`` in devices.yaml), surviving a dropped link.

Instead of one ``agent batch`` that lives as long as the SSH session, the jobs go into the daemon's queue
on the device (``agent/daemon.py``) and the controller follows the daemon's journal:

1. ``agent daemon --detach`` starts the daemon unless one answers (one that runs another agent build
   is replaced when it is idle; when busy it is used as it is and the status says so);
2. ``daemon-client submit`` queues the run's jobs, their ids prefixed with the run id (a daemon outlives
   runs); an id the daemon knows is not queued again, so submitting again after a reconnect is safe;
3. ``daemon-client watch --prefix <run-id>.`` prints a line per finished job; each result document is
   fetched from the journal as its line arrives (a job fetched once is never fetched or stored again);
   once all are home, ``daemon-client forget --prefix <run-id>.`` keeps the journal from growing;
4. when the link drops (or the daemon dies) the jobs go on, on the device; the controller reconnects
   with a growing pause, a bounded number of times, submits again (a no-op for known ids) and watches
   again. Each reconnect is recorded in ``run.json`` (the device's ``reconnects``). If the device stays
   unreachable, it fails with that reason and ``edgebench run --resume RUN`` collects the rest later.

A result keeps the run's own job id in ``job.id`` (as one-shot runs store it); the daemon's id is in
``daemon.job_id``. Nothing is timed across SSH: the journal's ``daemon.started`` / ``daemon.ended`` are the
device's clock.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import time
from typing import Any

from agent.errors import ExitCode as AgentExit
from agent.job import JobSpec
from controller.errors import DeviceError
from controller.fleet.daemon_unit import link_current
from controller.fleet.session import agent_event

log = logging.getLogger(__name__)

LINK_KINDS = ("unreachable", "timeout")  #: DeviceError kinds that mean "the link dropped": reconnect
MAX_ROUNDS = 20  #: watches a run may lose (plus one per job) before the device is given up
HEARTBEAT_SECONDS = 5.0  #: the watch prints a heartbeat this often (keeps the link heard, shows the queue)
_RESTART_WAIT_S = 30.0


def daemon_job_id(run_id: str, job_id: str) -> str:
    """The id a run's job has on a device's daemon: ``<run-id>.<job-id>``."""
    return f"{run_id}.{job_id}"


def detach(session: Any) -> dict[str, Any]:
    """``agent daemon --detach`` on the session's device: the daemon's status (``started``: by this call).
    Raises DeviceError kind "agent" when it does not start."""
    argv = [session.agent, "daemon", "--detach", "--workdir", session.workdir, "--lock",
            posixpath.join(session.workdir, "lock")]
    result = session.run_python(argv)
    if not result.ok:
        raise DeviceError(session.device.name, f"the agent daemon did not start (exit {result.exit_code}): "
                          f"{result.stderr.strip()[-500:]}", kind="agent")
    return json.loads(result.stdout.strip().splitlines()[-1])


def fetch_journaled(session: Any, folder: str, prefix: str, daemon_id: str, remote: str) -> dict[str, Any]:
    """Download one journaled result (``remote``) through ``folder`` and return it with the run's own job
    id in ``job.id`` (the daemon's in ``daemon.job_id``). Raises DeviceError for a dead link."""
    local = os.path.join(folder, f".fetch-{daemon_id}.json")
    try:  # (inside: a download cut off by a dead link leaves no partial file in the run folder)
        session.t.get(remote, local)
        with open(local, encoding="utf-8") as fh:
            doc = json.load(fh)
    finally:
        if os.path.exists(local):
            os.unlink(local)
    doc["job"]["id"] = daemon_id[len(prefix):]
    doc.setdefault("daemon", {})["job_id"] = daemon_id
    return doc


class DaemonJobs:
    """The daemon part of one :class:`~controller.fleet.device_run.DeviceRun` (``run``): ensure, submit, watch + fetch,
    reconnect. ``run`` provides the transport (``t``), ``run_python``, ``agent``, ``workdir``, ``device``,
    ``store``, ``status``, ``options``, ``jobs``, ``fetched``, ``open``/``close`` and ``_set``."""

    def __init__(self, run: Any):
        self.run = run
        self.prefix = daemon_job_id(run.store.run_id, "")
        self.cursor = 0

    # ---- the daemon ---------------------------------------------------------------------------------------
    def client(self, *args: str, timeout: float | None = None, on_line=None) -> Any:
        return self.run.run_python([self.run.agent, "daemon-client", "--workdir", self.run.workdir, *args],
                                   timeout=timeout, on_line=on_line)

    def ensure(self) -> dict[str, Any]:
        """Start the daemon unless one answers; replace an idle one that runs another agent build.
        Returns its status. Raises DeviceError kind "agent" when it cannot be started."""
        link_current(self.run)  # a systemd-managed daemon restarts with this build
        status = self._detach()
        daemon = status.get("daemon") or {}
        if daemon.get("agent_real") != self.run.agent:
            busy = status.get("running") or status.get("queued")
            if busy:
                self.run._set(detail=f"the daemon runs agent {daemon.get('agent_real')} and is busy: using it")
            else:
                self.client("stop").check(self.run.device.name)
                deadline = time.monotonic() + _RESTART_WAIT_S
                while self.client("status").exit_code == 0 and time.monotonic() < deadline:
                    time.sleep(0.2)
                status = self._detach()
        self.run.status.daemon = {"pid": (status.get("daemon") or {}).get("pid"),
                                  "started": bool(status.get("started")),
                                  "agent": (status.get("daemon") or {}).get("agent_real")}
        return status

    def _detach(self) -> dict[str, Any]:
        return detach(self.run)

    def submit(self, run_dir: str) -> dict[str, Any]:
        """Queue every job of the run (idempotent on the device: the ones it knows are not queued again);
        ``<run_dir>/daemon-jobs.json`` keeps them for ``--resume``. Returns the daemon's answer."""
        jobs = [dict(job, id=daemon_job_id(self.run.store.run_id, job["id"])) for job in self.run.jobs]
        jobs_file = posixpath.join(run_dir, "daemon-jobs.json")
        self.run.t.put_bytes(json.dumps(jobs, indent=1).encode(), jobs_file)
        result = self.client("submit", jobs_file)
        if not result.ok:
            raise DeviceError(self.run.device.name, f"the agent daemon refused the jobs (exit {result.exit_code}): "
                              f"{result.stderr.strip()[-800:]}", kind="agent")
        return json.loads(result.stdout.strip().splitlines()[-1])

    # ---- following the journal -------------------------------------------------------------------------------
    def collect(self, run_dir: str) -> None:
        """Ensure, submit, then watch and fetch until every job of the run is home, reconnecting after a
        dropped link. Raises DeviceError when the link cannot be brought back, kind "interrupted" (whatever
        broke) once Ctrl-C / SIGTERM closed the link: the jobs go on in the daemon."""
        try:
            self._collect(run_dir)
        except Exception as exc:
            if getattr(self.run, "stopping", False) and not (isinstance(exc, DeviceError)
                                                              and exc.kind == "interrupted"):
                raise self._interrupted() from exc
            raise

    def _collect(self, run_dir: str) -> None:
        ahead = self._ahead_of_us(self.ensure())
        self.submit(run_dir)
        # Bounded: each round either finishes, or follows a dropped link / a dead daemon (which costs at
        # most the job it was measuring); a link that keeps dropping ends the device after this many rounds.
        rounds = MAX_ROUNDS + len(self.run.jobs)
        for _ in range(rounds):
            try:
                why = self._watch(ahead)
                if why is None:
                    self._forget()
                    return
            except DeviceError as exc:
                if exc.kind not in LINK_KINDS or getattr(self.run, "stopping", False):
                    raise
                why = exc.reason
            self._reconnect(why)
            self.ensure()
            self.submit(run_dir)
        raise DeviceError(self.run.device.name, f"gave up after {rounds} dropped watches (last: {why}); the jobs go "
                          f"on in the device's agent daemon: collect them with `edgebench run --resume "
                          f"{self.run.store.run_id}`", kind="unreachable")

    def _ahead_of_us(self, answer: dict[str, Any]) -> int:
        """Jobs of others queued or running on the daemon (from its status): they bound our wait too."""
        queued = [j for j in answer.get("queued") or [] if not j.startswith(self.prefix)]
        running = answer.get("running") or {}
        busy = 1 if running and not str(running.get("id", "")).startswith(self.prefix) else 0
        self.run.status.daemon_queue_ahead = len(queued) + busy
        return self.run.status.daemon_queue_ahead

    def _watch(self, ahead: int) -> str | None:
        """One ``watch`` until the run's jobs are all journaled: None when complete, else why it ended."""
        pending = [j for j in self.run.jobs if j["id"] not in self.run.fetched]
        if not pending:
            return None
        options = self.run.options
        deadline = (ahead + len(pending)) * options.job.device_seconds() + self._lock_timeout() + 60
        self.run._set(state="running", detail=f"daemon: {len(pending)} job(s) queued")
        start = time.monotonic()
        result = self.client("watch", "--prefix", self.prefix, "--heartbeat", f"{HEARTBEAT_SECONDS:g}",
                             timeout=deadline, on_line=self._on_line)
        self.run.status.batch_seconds += time.monotonic() - start
        if result.exit_code == 2:
            raise DeviceError(self.run.device.name, f"the agent daemon refused the watch: "
                              f"{result.stderr.strip()[-500:]}", kind="agent")
        if result.exit_code == 0 and all(j["id"] in self.run.fetched for j in self.run.jobs):
            return None
        if result.exit_code in (AgentExit.JOB_FAILED, AgentExit.NO_DAEMON):  # stopping / vanished mid-watch
            return "the agent daemon stopped during the run"
        if result.exit_code < 0:  # the channel closed without an exit status: the session was cut
            return "the SSH session was lost while watching the daemon (no exit status)"
        return f"the watch ended early (exit {result.exit_code}): {result.stderr.strip()[-300:]}"

    def _forget(self) -> None:
        """Every result of the run is home (in the run folder): drop them from the device's journal so it
        does not grow run after run. A failure here costs disk space only: logged, not fatal."""
        result = self.client("forget", "--prefix", self.prefix)
        if not result.ok:
            log.warning("%s: the daemon's journal entries of this run stay (forget failed: %s)",
                        self.run.device.name, result.stderr.strip()[-300:])

    def _lock_timeout(self) -> float:
        value = self.run.options.lock_timeout
        return self.run.device.lock_timeout if value is None else value

    def _on_line(self, line: str) -> None:
        event = agent_event(line)
        if event is None:
            log.info("%s: daemon-client: %s", self.run.device.name, line)
            return
        if event.get("event") == "heartbeat":
            self.run.status.daemon_heartbeat = {k: event.get(k) for k in ("time", "temp_c", "loadavg",
                                                                           "queue_length", "uptime_s")}
            self.run._set(detail=f"daemon: {event.get('queue_length')} job(s) queued on the device")
        elif event.get("event") == "done" and str(event.get("id", "")).startswith(self.prefix):
            self.fetch(str(event["id"]), str(event["file"]))

    def fetch(self, daemon_id: str, remote: str) -> None:
        """Fetch one journaled result, store it under the run's own job id (once)."""
        job_id = daemon_id[len(self.prefix):]
        if job_id in self.run.fetched:
            return
        folder = self.run.store.device_dir("results", self.run.device.name)
        doc = fetch_journaled(self.run, folder, self.prefix, daemon_id, remote)
        self.run.store.save_result(self.run.device.name, doc)
        self.run.fetched.add(job_id)
        failed = doc.get("status") != "ok"
        self.run._set(jobs_done=self.run.status.jobs_done + 1,
                      jobs_failed=self.run.status.jobs_failed + int(failed))

    def _interrupted(self) -> DeviceError:
        return DeviceError(self.run.device.name, f"interrupted; the jobs go on in the device's agent daemon: "
                           f"collect them with `edgebench run --resume {self.run.store.run_id}`", kind="interrupted")

    def _reconnect(self, why: str) -> None:
        """Close the dead link and connect again: ``options.reconnect_attempts`` tries, the pause doubling
        from ``options.reconnect_backoff`` s (at most 30 s). Appends to ``status.reconnects``. Raises
        DeviceError kind "unreachable" when every try failed."""
        options, status, name = self.run.options, self.run.status, self.run.device.name
        if getattr(self.run, "stopping", False):  # Ctrl-C closed the link: no reconnect, the jobs go on
            raise self._interrupted()
        entry: dict[str, Any] = {"time": time.time(), "reason": why, "attempts": 0, "ok": False, "error": None}
        status.reconnects.append(entry)
        pause = options.reconnect_backoff
        for attempt in range(1, options.reconnect_attempts + 1):
            self.run.close()
            self.run._set(state="reconnecting", detail=f"link lost ({why}); try {attempt} in {pause:g} s")
            time.sleep(pause)
            entry["attempts"] = attempt
            try:
                self.run.open()
                entry["ok"] = True
                entry["seconds"] = round(time.time() - entry["time"], 3)
                self.run._set(reconnects=list(status.reconnects))
                log.info("%s: reconnected after %d tries (%s)", name, attempt, why)
                return
            except DeviceError as exc:
                if exc.kind not in LINK_KINDS:
                    raise
                entry["error"] = exc.reason
            pause = min(30.0, pause * 2)
        self.run._set(reconnects=list(status.reconnects))
        raise DeviceError(name, f"the link dropped ({why}) and {options.reconnect_attempts} reconnects failed; "
                          f"the jobs go on in the device's agent daemon: collect them with `edgebench run "
                          f"--resume {self.run.store.run_id}`", kind="unreachable")


def heartbeat(session: Any) -> dict[str, Any]:
    """The daemon's heartbeat on a connected session's device, for ``devices --check``: ``{"running": True,
    "pid", "uptime_s", "queue_length", "temp_c", "loadavg", "job"}`` or ``{"running": False, "reason"}``.
    Never starts a daemon. Raises DeviceError only for a dead link."""
    result = session.run_python([session.agent, "daemon-client", "--workdir", session.workdir, "status"])
    if result.exit_code == AgentExit.NO_DAEMON:
        return {"running": False, "reason": "not running (the next run with daemon: true starts it)"}
    if result.exit_code != 0:
        return {"running": False, "reason": f"daemon-client status failed (exit {result.exit_code}): "
                                            f"{result.stderr.strip()[-300:]}"}
    status = json.loads(result.stdout)
    beat = status.get("heartbeat") or {}
    running = status.get("running") or {}
    return {"running": True, "pid": (status.get("daemon") or {}).get("pid"), "uptime_s": beat.get("uptime_s"),
            "queue_length": beat.get("queue_length"), "temp_c": beat.get("temp_c"),
            "loadavg": beat.get("loadavg"), "job": running.get("id"),
            "waiting_for_lock": status.get("waiting_for_lock"), "problem": status.get("problem")}


def collect_journal(session: Any, run_id: str, lock_timeout: float) -> tuple[list | None, dict[str, dict]]:
    """``run --resume`` for a daemon device (the signature of :func:`controller.fleet.resume.collect`):
    (the run's jobs as submitted, with the run's job ids, or None when none were submitted; {job id:
    result document}). Starts the daemon if it is not running (its recovery journals a job it was
    measuring when it died as crashed), then waits for the run's jobs still queued (bounded by their
    timeouts) and fetches every journaled result. Raises DeviceError."""
    import tempfile

    session.ensure_agent()
    prefix = daemon_job_id(run_id, "")
    jobs_file = posixpath.join(session.workdir, "runs", run_id, "daemon-jobs.json")
    if not session.t.exists(jobs_file):
        return None, {}
    with tempfile.TemporaryDirectory(prefix="edgebench-resume-") as folder:
        local = os.path.join(folder, "daemon-jobs.json")
        session.t.get(jobs_file, local)
        with open(local, encoding="utf-8") as fh:
            jobs = json.load(fh)
        detach(session)
        deadline = lock_timeout + sum(JobSpec.from_dict(j).device_seconds() for j in jobs) + 60
        docs: dict[str, dict] = {}

        def on_line(line: str) -> None:
            event = agent_event(line) or {}
            if event.get("event") == "done" and str(event.get("id")).startswith(prefix):
                doc = fetch_journaled(session, folder, prefix, str(event["id"]), str(event["file"]))
                docs[doc["job"]["id"]] = doc

        result = session.run_python([session.agent, "daemon-client", "--workdir", session.workdir, "watch",
                                     "--prefix", prefix, "--heartbeat", f"{HEARTBEAT_SECONDS:g}"],
                                    timeout=deadline, on_line=on_line)
        if result.exit_code != 0:
            raise DeviceError(session.device.name, f"collecting the run from the agent daemon's journal ended "
                              f"early (exit {result.exit_code}): {result.stderr.strip()[-300:]}", kind="agent")
    return [dict(j, id=j["id"][len(prefix):]) for j in jobs], docs
