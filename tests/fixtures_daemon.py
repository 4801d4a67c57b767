"""A real agent daemon process for tests: started in the foreground (so the test knows its pid and can
SIGKILL it), talked to through its real Unix socket.

``agent_daemon`` (function fixture): a factory ``start(workdir, **options) -> DaemonProcess``; every
daemon it started, and every worker such a daemon left behind, is killed by pid at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from agent import daemon_client
from agent.errors import AgentError

REPO = Path(__file__).resolve().parent.parent
START_DEADLINE_S = 30


class DaemonProcess:
    """One ``python -m agent daemon`` process on ``workdir``."""

    def __init__(self, workdir: Path, python: str = sys.executable, lock: Path | None = None,
                 env: dict | None = None):
        self.workdir, self.python, self.lock, self.env = Path(workdir), python, lock, env or {}
        self.proc: subprocess.Popen | None = None
        self.workers: set[int] = set()

    def start(self) -> DaemonProcess:
        argv = [self.python, "-m", "agent", "daemon", "--workdir", str(self.workdir)]
        if self.lock:
            argv += ["--lock", str(self.lock)]
        self.log = open(self.workdir / "daemon-test.log", "ab")  # noqa: SIM115 - closed in kill/stop
        self.proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     env=dict(os.environ, PYTHONPATH=str(REPO), **self.env))
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                self.status()
                return self
            except daemon_client.NoDaemonError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the daemon did not start (exit {self.proc.poll()}): "
                                         f"{(self.workdir / 'daemon-test.log').read_text()[-2000:]}") from None
                time.sleep(0.05)

    def request(self, message: dict, timeout: float = 30.0) -> dict:
        return daemon_client.request(str(self.workdir), message, timeout)

    def status(self) -> dict:
        return self.request({"op": "status"})

    def submit(self, jobs: list) -> dict:
        return self.request({"op": "submit", "jobs": jobs})

    def client(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``python -m agent daemon-client --workdir W ARGS`` as a separate process."""
        return subprocess.run([self.python, "-m", "agent", "daemon-client", "--workdir", str(self.workdir),
                               *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO)), check=False)

    def watch(self, ids: list, since: int = 0, timeout: float = 120) -> list:
        """Every ``done`` event of ``ids`` (blocks until they are all finished; bounded by ``timeout``)."""
        events = []
        deadline = time.monotonic() + timeout
        for event in daemon_client.stream(str(self.workdir), {"op": "watch", "since": since, "ids": ids,
                                                              "heartbeat": 1.0}, timeout=timeout):
            assert time.monotonic() < deadline, f"watch took longer than {timeout} s"
            if event["event"] == "done":
                events.append(event)
            if event.get("end"):
                assert event["complete"], event
                return events
        raise AssertionError("the watch ended without its end line")

    def wait_running(self, job_id: str, timeout: float = 60) -> dict:
        """The status once ``job_id`` runs in a worker (its pid known)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            running = status["running"]
            if running and running["id"] == job_id and running["worker_pid"]:
                self.workers.add(running["worker_pid"])
                return status
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} never started running")

    def sigkill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()

    def stop(self) -> int:
        try:
            self.request({"op": "stop"})
        except AgentError:
            pass  # already gone: wait() says how it ended
        code = self.proc.wait(timeout=60)
        self.log.close()
        return code

    def cleanup(self) -> None:
        if self.proc and self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.workers.add(child.pid)
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.log.close()
        for pid in self.workers:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def journal_files(workdir: Path) -> list:
    return sorted((Path(workdir) / "daemon" / "journal").glob("*.json"))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture
def agent_daemon():
    started: list = []

    def start(workdir: Path, **options) -> DaemonProcess:
        daemon = DaemonProcess(workdir, **options)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.cleanup()
