"""The agent daemon's answers to its clients: status, submit, result, cancel, watch, stop.

A mixin of :class:`agent.daemon.Daemon` (it uses the daemon's store, condition and running-job fields);
the wire format is in :mod:`agent.daemon_client`. Every refusal is an answer (``{"error": ...}``), never
an exception that reaches the daemon's loop: a bad or hostile request cannot stop the daemon.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import struct
import time

import agent
from agent import probes
from agent.daemon_client import read_lines, send_line
from agent.errors import AgentError, BusyError, UsageError
from agent.job import JobSpec, check_job_id
from agent.runner import agent_root

log = logging.getLogger("agent.daemon")
_REQUEST_TIMEOUT_S = 30.0
_CANCEL_WAIT_S = 20.0


class Requests:
    """Request handlers; mixed into Daemon, which provides ``store``, ``cond``, ``current``, ``stopping``,
    ``started``, ``options``, ``waiting_for_lock``, ``problem``, ``request_stop``, ``_kill_current`` and
    ``_journal_cancelled``."""

    def _serve_connection(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(_REQUEST_TIMEOUT_S)
                self._check_peer(conn)
                request = next(read_lines(conn), None)
                if request is None:
                    return
                op = request.get("op")
                if op == "watch":
                    conn.settimeout(None)
                    self._watch(conn, request)
                    return
                handler = {"status": self._status, "submit": self._submit, "result": self._result,
                           "cancel": self._cancel, "stop": self._stop}.get(op)
                if handler is None:
                    raise UsageError(f"unknown request op {op!r}; known: status, submit, result, cancel, "
                                     "watch, stop")
                send_line(conn, handler(request))
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                pass  # the client went away: nothing to answer
            except AgentError as exc:
                kind = "busy" if isinstance(exc, BusyError) else "usage" if isinstance(exc, UsageError) else "agent"
                self._answer_error(conn, kind, str(exc))
            except Exception as exc:
                log.exception("internal error while answering a request")
                self._answer_error(conn, "internal", f"agent daemon bug: {type(exc).__name__}: {exc}")

    @staticmethod
    def _answer_error(conn: socket.socket, kind: str, message: str) -> None:
        try:
            send_line(conn, {"error": {"kind": kind, "message": message}})
        except OSError:
            pass  # the client is gone; the daemon's log has the reason

    @staticmethod
    def _check_peer(conn: socket.socket) -> None:
        if not hasattr(socket, "SO_PEERCRED"):
            return  # the socket's 0600 mode is the only gate there
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid not in (os.getuid(), 0):
            raise UsageError(f"uid {uid} may not use this daemon (it serves uid {os.getuid()} only)")

    def heartbeat(self) -> dict:
        """Temperature, load, queue length and uptime: what ``edgebench devices --check`` shows."""
        with self.cond:
            running = self.current["id"] if self.current else None
            queued = len(self.store.queued) - (1 if running in self.store.queued else 0)
        return {"time": time.time(), "temp_c": probes.temperature_c(), "loadavg": probes.loadavg(),
                "queue_length": queued, "uptime_s": round(time.time() - self.started, 3)}

    def _status(self, request: dict) -> dict:
        heartbeat = self.heartbeat()
        with self.cond:
            current = dict(self.current) if self.current else None
            if current:
                current.pop("cancel")
            queued = [j for j in self.store.queued if not current or j != current["id"]]
            return {"daemon": {"pid": os.getpid(), "version": agent.__version__, "agent": agent_root(),
                               "agent_real": self.agent_real,
                               "workdir": str(self.options.root), "started": self.started,
                               "stopping": self.stopping},
                    "heartbeat": heartbeat, "running": current, "queued": queued,
                    "waiting_for_lock": self.waiting_for_lock, "problem": self.problem,
                    "finished": len(self.store.finished), "cursor": self.store.cursor}

    def _submit(self, request: dict) -> dict:
        jobs = request.get("jobs")
        if not isinstance(jobs, list):
            raise UsageError("submit needs 'jobs': a list of job objects")
        specs, seen = [], set()
        for i, item in enumerate(jobs):
            try:
                spec = JobSpec.from_dict(item)
                check_job_id(spec.id)
            except (UsageError, TypeError, ValueError) as exc:
                raise UsageError(f"job #{i}: {exc}; nothing was queued") from exc
            if spec.id in seen:
                raise UsageError(f"job id {spec.id!r} is given twice; nothing was queued")
            seen.add(spec.id)
            specs.append(spec)
        with self.cond:
            if self.stopping:
                raise BusyError("the daemon is stopping; submit again once it is restarted")
            new, duplicate = [], []
            for spec in specs:
                known = self.store.spec_of(spec.id) if self.store.state_of(spec.id) else None
                if known is None:
                    new.append(spec)
                elif known == spec.to_dict():
                    duplicate.append(spec.id)
                else:
                    raise UsageError(f"job id {spec.id!r} is already known with different settings; use a new "
                                     "id for a different job (nothing was queued)")
            now = time.time()
            for spec in new:
                self.store.submit(spec, now)
            self.cond.notify_all()
            return {"accepted": [s.id for s in new], "duplicate": duplicate, "cursor": self.store.cursor,
                    "queue_length": len(self.store.queued)}

    def _job_state(self, job_id: str) -> str:
        state = self.store.state_of(job_id)
        if state is None:
            raise UsageError(f"no job {job_id!r} on this daemon (never submitted)")
        if state == "queued" and self.current and self.current["id"] == job_id:
            return "running"
        return state

    def _result(self, request: dict) -> dict:
        with self.cond:
            if request.get("id") is not None:
                job_id = str(request["id"])
                state = self._job_state(job_id)
                path = self.store.journal_path(job_id)
                return {"id": job_id, "state": state, "file": str(path) if path else None,
                        "document": self.store.document(job_id)}
            since = request.get("since")
            if not isinstance(since, int) or since < 0:
                raise UsageError("result needs 'id' or 'since' (a cursor >= 0)")
            rows = self.store.since(since)
            for row in rows:
                row["document"] = self.store.document(row["id"])
            return {"cursor": self.store.cursor, "finished": rows}

    def _cancel(self, request: dict) -> dict:
        job_id = str(request.get("id"))
        with self.cond:
            state = self._job_state(job_id)
            if state == "finished":
                return {"id": job_id, "state": "finished", "cancelled": False}
            if state == "queued":
                self._journal_cancelled(self.store.queued[job_id], started=None)
                self.cond.notify_all()
                return {"id": job_id, "state": "finished", "cancelled": True}
            self.current["cancel"] = True
            self._kill_current()
            self.cond.notify_all()
            deadline = time.monotonic() + _CANCEL_WAIT_S
            while self.store.state_of(job_id) != "finished" and time.monotonic() < deadline:
                self.cond.wait(timeout=0.2)
            return {"id": job_id, "state": self.store.state_of(job_id), "cancelled": True}

    def _stop(self, request: dict) -> dict:
        self.request_stop("stop request")
        return {"stopping": True}

    def _watch(self, conn: socket.socket, request: dict) -> None:
        """Stream ``{"event": "done", ...}`` per finished job after ``since`` (among ``ids``, or the known
        jobs whose id starts with ``prefix``, or the queue as it is now), a heartbeat
        every ``heartbeat`` s, and ``{"event": "end", "end": true, "complete": bool}`` last."""
        since, ids, every = request.get("since", 0), request.get("ids"), request.get("heartbeat") or 10.0
        if (not isinstance(since, int) or since < 0 or not isinstance(every, (int, float))
                or not math.isfinite(every) or every <= 0 or not (ids is None or isinstance(ids, list))):
            raise UsageError("watch needs 'since' (a cursor >= 0), 'heartbeat' (seconds > 0) and 'ids' (a list) "
                             "or 'prefix'")
        with self.cond:
            prefix = request.get("prefix")
            if ids is None and prefix:
                ids = [j for j in list(self.store.queued) + list(self.store.finished) if j.startswith(str(prefix))]
            elif ids is None:
                ids = list(self.store.queued)
            unknown = [j for j in ids if self.store.state_of(str(j)) is None]
            if unknown:
                raise UsageError(f"watch: no job(s) {unknown} on this daemon (submit them first)")
            waiting = {str(j) for j in ids}
        last_beat = 0.0
        while True:
            with self.cond:
                rows = [r for r in self.store.since(since) if r["id"] in waiting]
                since = max([since] + [r["cursor"] for r in self.store.since(since)])
                stopping = self.stopping
                if not rows and waiting and not stopping and time.monotonic() - last_beat < every:
                    self.cond.wait(timeout=min(1.0, every))
                    continue
            for row in rows:
                doc = self.store.document(row["id"]) or {}
                send_line(conn, dict(row, event="done", status=doc.get("status")))
                waiting.discard(row["id"])
            if not waiting or stopping:
                send_line(conn, {"event": "end", "end": True, "complete": not waiting, "cursor": since,
                                 "missing": sorted(waiting),
                                 "reason": None if not waiting else "the daemon is stopping"})
                return
            if time.monotonic() - last_beat >= every:
                send_line(conn, dict(self.heartbeat(), event="heartbeat"))
                last_beat = time.monotonic()
