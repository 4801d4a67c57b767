"""One device over one transport: connect, resolve the workdir and python, make sure the agent is there,
ask it for ``info``. ``edgebench run``, ``devices --check`` and ``bootstrap`` all start this way.

Trust model: the controller runs only its own agent (pushed, sha256-verified) with the device's python,
through argv lists quoted by :func:`controller.fleet.transport.shell_command`; host keys are strict."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from agent.modelfile import sha256_of
from controller.errors import DeviceError
from controller.fleet.inventory import Device, resolve_python
from controller.fleet.transport import CommandResult, Transport, open_transport

# Runs on the device: sha256 each pushed temp file; rename it to its final name only when it matches.
# argv: (temp, sha256, final)...; prints {"final": "ok" | "mismatch <got>"} as JSON.
_VERIFY_SCRIPT = """
import hashlib, json, os, sys
a = sys.argv[1:]
out = {}
for tmp, want, final in zip(a[0::3], a[1::3], a[2::3]):
    h = hashlib.sha256()
    with open(tmp, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    if h.hexdigest() == want:
        os.replace(tmp, final)
        out[final] = 'ok'
    else:
        os.unlink(tmp)
        out[final] = 'mismatch ' + h.hexdigest()
print(json.dumps(out))
"""


@dataclass
class DeviceStatus:
    """Where one device is; sent to the progress display on every change."""

    name: str
    state: str = "waiting"  #: waiting, connecting, preflight, pushing, running, fetching, done, failed
    detail: str = ""
    bytes_pushed: int = 0
    jobs_done: int = 0
    jobs_total: int = 0
    jobs_failed: int = 0
    jobs_skipped: int = 0
    reason: str | None = None
    kind: str | None = None
    host_key: str | None = None
    fingerprint: str | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    agent_version: str | None = None
    python: str | None = None
    seconds: float = 0.0  #: controller wall time for this device
    batch_seconds: float = 0.0  #: wall time of the device's batch (its own measuring time)
    phases: dict[str, float] = field(default_factory=dict)  #: seconds per step (connect, agent, info ...)
    #: daemon devices: each reconnect after a dropped link {"time", "reason", "attempts", "ok", "error"}
    reconnects: list[dict[str, Any]] = field(default_factory=list)
    daemon: dict[str, Any] | None = None  #: daemon devices: {"pid", "started" (by this run), "agent"}
    daemon_heartbeat: dict[str, Any] | None = None  #: the last heartbeat the daemon sent during the run
    daemon_queue_ahead: int = 0  #: jobs of others queued on the daemon when this run submitted

    @property
    def failed(self) -> bool:
        return self.state == "failed"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def device_fingerprint(info: dict[str, Any], runtime: str, runtime_version: str) -> str:
    """A short hash of what makes timings comparable on a device: hardware, kernel, python, runtime."""
    env = info.get("env") or {}
    facts = [env.get(k) for k in ("arch", "cpu_model", "cpu_count", "mem_total_kb", "kernel", "python")]
    facts += [runtime, runtime_version]
    return hashlib.sha256(json.dumps(facts, default=str).encode()).hexdigest()[:16]


def pick_runtime(device: Device, info: dict[str, Any]) -> tuple[str, str]:
    """(name, version) of the runtime jobs will use: the device's ``runtime`` key, else the first one
    the agent can import. Raises DeviceError kind "runtime" when there is none (or not that one)."""
    usable = [r for r in info.get("runtimes") or [] if r.get("ok")]
    if device.runtime != "auto":
        usable = [r for r in usable if r.get("name") == device.runtime]
    if not usable:
        problems = "; ".join(f"{r.get('name')}: {r.get('error')}" for r in info.get("runtimes") or [])
        wanted = "a TFLite runtime" if device.runtime == "auto" else device.runtime
        raise DeviceError(device.name, f"{wanted} cannot be imported by {info.get('python_executable')} "
                          f"({problems or 'none found'}); run `edgebench bootstrap --device {device.name}`",
                          kind="runtime")
    return usable[0]["name"], str(usable[0].get("version"))


def _runtime_problems(stdout: str) -> str:
    """The per-runtime import errors from ``agent info --json`` output (empty when it printed none)."""
    try:
        info = json.loads(stdout)
    except (json.JSONDecodeError, ValueError):
        return ""
    runtimes = info.get("runtimes") if isinstance(info, dict) else None
    if not runtimes:
        return "none installed"
    problems = [f"{r.get('name')}: {r.get('error') or 'not tried'}" for r in runtimes if not r.get("ok")]
    if info.get("numpy_version") is None:  # a fresh board: the runtimes need numpy too
        problems.append("numpy: not installed")
    return "; ".join(problems)


class DeviceSession:
    """One device over one transport: connect, resolve workdir and python, make sure the agent is there,
    ask it for ``info``. ``edgebench run``, ``devices --check`` and ``bootstrap`` all start this way."""

    def __init__(self, device: Device, agent_pyz: str,
                 notify: Callable[[DeviceStatus], None] | None = None):
        self.device = device
        self.agent_pyz = agent_pyz
        self.notify = notify or (lambda status: None)
        self.status = DeviceStatus(device.name)
        self.token = secrets.token_hex(4)  #: names this session's temp files on the device
        self.t: Transport | None = None
        self.workdir = ""
        self.python = ""
        self.agent = ""
        self.parts_in_flight: list[str] = []  #: part files being uploaded now (removed if interrupted)

    def _set(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.status, key, value)
        self.notify(dataclasses.replace(self.status))

    def open(self, subdirs: Sequence[str] = ()) -> None:
        """Connect, resolve ``~`` in the workdir, create it (and ``subdirs``), pick the python.
        Raises DeviceError / HostKeyError."""
        self._set(state="connecting", detail="")
        self.t = open_transport(self.device)
        self._set(host_key=self.t.host_key_fingerprint)
        self.workdir = self.t.expand(self.device.workdir).rstrip("/") or "/"
        for sub in ("agent", *subdirs):
            self.t.makedirs(posixpath.join(self.workdir, sub))
        self.resolve_python()

    def resolve_python(self) -> str:
        """Apply :func:`controller.fleet.inventory.resolve_python`, seeing whether bootstrap made a venv here."""
        venv = self.venv_python()
        self.python = resolve_python(self.device, venv_python=venv if self.t.exists(venv) else None)
        self._set(python=self.python)
        return self.python

    def venv_python(self) -> str:
        return posixpath.join(self.workdir, "venv", "bin", "python")

    def close(self) -> None:
        if self.t is not None:
            self.t.close()

    def run_python(self, argv: list[str], timeout: float | None = None, **kw: Any) -> CommandResult:
        """Run ``python argv...`` on the device (deadline: ``timeout``, default the device's
        ``command_timeout``); a missing interpreter is a DeviceError kind "python"."""
        timeout = self.device.command_timeout if timeout is None else timeout
        result = self.t.run([self.python, *argv], timeout=timeout, **kw)
        if result.exit_code in (126, 127):
            raise DeviceError(self.device.name, f"python {self.python!r} cannot be run on the device "
                              f"({result.stderr.strip()[-300:]}); install python3, set `python:` in the "
                              f"inventory, or run `edgebench bootstrap --device {self.device.name}`",
                              kind="python")
        return result

    def ensure_agent(self) -> str:
        """Push the agent zipapp unless this version (and content) is already on the device; return its
        remote path."""
        from agent import __version__

        digest = sha256_of(self.agent_pyz)
        remote = posixpath.join(self.workdir, "agent", f"edgebench-agent-{__version__}-{digest[:8]}.pyz")
        if not self.t.exists(remote):
            self._set(state="pushing", detail="agent")
            self.push_verified([(self.agent_pyz, digest, remote)])
        self.agent = remote
        return remote

    def push_verified(self, files: list[tuple[str, str, str]]) -> None:
        """Push (local, sha256, remote) files to temp names, verify on the device, rename into place.
        Raises DeviceError kind "push" on a mismatch, "disk_full" when the device's disk is full."""
        args: list[str] = []
        for local, digest, remote in files:
            tmp = f"{remote}.part-{self.token}"
            self.parts_in_flight.append(tmp)
            base = self.status.bytes_pushed
            self.t.put(local, tmp, on_bytes=lambda n, base=base: self._set(bytes_pushed=base + n))
            self._set(bytes_pushed=base + os.path.getsize(local))
            args += [tmp, digest, remote]
        result = self.run_python(["-c", _VERIFY_SCRIPT, *args])
        if not result.ok:
            disk = "No space" in result.stderr
            raise DeviceError(self.device.name, f"verifying pushed files failed: {result.stderr.strip()[-500:]}",
                              kind="disk_full" if disk else "push")
        verdicts = json.loads(result.stdout.strip().splitlines()[-1])
        self.parts_in_flight.clear()  # each was renamed or removed by the verify script
        bad = {k: v for k, v in verdicts.items() if v != "ok"}
        if bad:
            raise DeviceError(self.device.name, f"sha256 mismatch after upload (corrupted in transit or on "
                              f"the device's disk): {bad}", kind="push")

    def agent_failure(self, command: str, result: CommandResult) -> DeviceError:
        """The error for an ``agent COMMAND`` that exited non-zero: the agent's own reason (its stderr, or
        for a missing runtime its per-runtime import errors) and the fix, by the agent's exit code
        (``agent.errors.ExitCode``)."""
        from agent.errors import ExitCode as AgentExit

        name, code = self.device.name, result.exit_code
        said = result.stderr.strip()[-800:] or result.stdout.strip()[-300:] or "it printed nothing"
        if code == AgentExit.NO_RUNTIME:
            problems = _runtime_problems(result.stdout) or said
            return DeviceError(name, f"no TFLite runtime in {self.python} on {name} ({problems}); run "
                               f"`edgebench bootstrap --device {name}` or set `python:` in the inventory to an "
                               "interpreter that has one", kind="runtime")
        if code == AgentExit.BUSY:
            lock = posixpath.join(self.workdir, "lock")
            return DeviceError(name, f"busy: another controller holds the device lock ({lock}) and it was not "
                               "released in time; try again later or raise --lock-timeout", kind="busy")
        if code == AgentExit.USAGE:
            return DeviceError(name, f"`agent {command}` refused its arguments ({said}); the agent on the device "
                               "and this controller disagree - run with --agent to push a matching agent",
                               kind="agent")
        if code == AgentExit.DISK_FULL:  # the agent's message holds the free space and the fix
            return DeviceError(name, f"`agent {command}` stopped: {said.removeprefix('error: ')}", kind="disk_full")
        if code == AgentExit.INTERNAL:
            return DeviceError(name, f"`agent {command}` hit a bug in the agent ({said}); please report it with "
                               "this message", kind="agent")
        if code == AgentExit.INTERRUPTED or code < 0:
            how = "interrupted" if code in (AgentExit.INTERRUPTED, -2, -1) else f"killed by signal {-code}"
            return DeviceError(name, f"`agent {command}` was {how} ({said})", kind="interrupted")
        if "No space left" in said:
            return DeviceError(name, f"disk full on {name} during `agent {command}` ({said}); free space in "
                               f"{self.workdir} or set another workdir", kind="disk_full")
        return DeviceError(name, f"`agent {command}` failed (exit {code}): {said}", kind="agent")

    def info(self, runtime: str | None = None) -> dict[str, Any]:
        """``agent info --json`` on the device. ``runtime`` ("auto" or a name) import-checks only the
        runtime jobs would use (a run); None checks every installed one (``devices --check``).
        Raises DeviceError kind "agent" when it fails."""
        argv = [self.agent, "info", "--json", "--workdir", self.workdir]
        if runtime is not None:
            argv += ["--runtime", runtime]
        result = self.run_python(argv)
        if not result.ok:
            raise self.agent_failure("info", result)
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            raise DeviceError(self.device.name, f"`agent info` printed no JSON: {result.stdout[-300:]!r}",
                              kind="agent") from exc
