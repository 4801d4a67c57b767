"""One device over one transport: connect, resolve the workdir and python, make sure the agent is there,
ask it for ``info``. ``edgebench run``, ``devices --check`` and ``bootstrap`` all start this way.

Trust model: the controller runs only its own agent (pushed, sha256-verified) with the device's python,
through argv lists quoted by :func:`controller.fleet.transport.shell_command`; host keys are strict."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from agent.modelfile import sha256_of
from controller.errors import DeviceError
from controller.fleet import device_scripts
from controller.fleet.inventory import Device, resolve_python
from controller.fleet.transport import CommandResult, Transport, open_transport

#: a staging command may take this long on top of the device's command_timeout per byte pushed
#: (bytes per second the link must at least carry)
MIN_PUSH_RATE = 256 * 1024


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
    batch_seconds: float = 0.0  #: wall time of the device's batch command, as the controller saw it
    #: the device's own measuring time: its first job's start to its last job's end (device clock)
    measuring_seconds: float | None = None
    phases: dict[str, float] = field(default_factory=dict)  #: seconds per step (connect, probe, stage ...)
    round_trips: int = 0  #: exchanges with the device that waited for its answer (after the handshake)
    round_trips_before_measuring: int | None = None  #: of those, up to and including starting the batch
    info_cached: bool | None = None  #: whether ``agent info``'s answer came from the controller's cache
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


def agent_event(line: str) -> dict[str, Any] | None:
    """The JSON object an agent command printed on ``line`` (its events: start, done, heartbeat ...), or
    None when the line is not one (a log line, or JSON that is not an object)."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


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
        self.probed: dict[str, Any] = {}  #: the probe's answer
        self.workdir = ""
        self.python = ""
        self.agent = ""
        self.parts_in_flight: list[str] = []  #: part files being uploaded now (removed if interrupted)

    def _set(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.status, key, value)
        self.notify(dataclasses.replace(self.status))

    def open(self, subdirs: Sequence[str] = (), use_venv: bool = True) -> None:
        """Connect, then probe (one round trip): resolve ``~`` in the workdir, create it (and ``agent``,
        ``models``, ``data`` and ``subdirs``), pick the python, list the cache, read the free space.
        ``use_venv=False`` probes with the device's own python even where bootstrap made a venv (bootstrap
        itself, which may be there to repair it). Raises DeviceError / HostKeyError."""
        self.connect()
        self.probe(subdirs, use_venv)

    def connect(self) -> None:
        """Open the transport (the SSH handshake; no round trip counted). Raises DeviceError / HostKeyError."""
        self._set(state="connecting", detail="")
        self.t = open_transport(self.device)
        self._set(host_key=self.t.host_key_fingerprint)

    def probe(self, subdirs: Sequence[str] = (), use_venv: bool = True) -> dict[str, Any]:
        """Run the probe (:mod:`controller.fleet.device_scripts`) and keep its answer in ``self.probed``.
        Raises DeviceError kind "python" when no interpreter can run it, "workdir" when the folders
        cannot be made."""
        argv, otherwise = device_scripts.probe_argv(self.device, subdirs, use_venv)
        self.python = otherwise
        result = self.run_command(argv)
        answer = device_scripts.last_json_line(result.stdout) if result.ok else None
        if answer is None:
            raise DeviceError(self.device.name, f"the probe failed (exit {result.exit_code}): "
                              f"{(result.stderr or result.stdout).strip()[-500:] or 'it printed nothing'}",
                              kind="probe")
        self.workdir, self.python = answer["workdir"], answer["python"]
        self._set(python=self.python)
        if answer.get("error"):
            raise DeviceError(self.device.name, f"{answer['error']['message']}; fix the workdir's permissions "
                              "or set another `workdir:`", kind=answer["error"]["kind"])
        self.probed = answer
        return answer

    def present(self, remote: str) -> bool:
        """Whether ``remote`` (a file directly in a cache folder) was on the device at the probe."""
        folder, name = posixpath.split(remote)
        sub = posixpath.relpath(folder, self.workdir)
        listed = (self.probed.get("present") or {}).get(sub)
        return name in listed if listed is not None else self.t.exists(remote)

    def resolve_python(self) -> str:
        """Apply :func:`controller.fleet.inventory.resolve_python`, seeing whether bootstrap made a venv here
        (bootstrap, after it made the venv; a run learns it from the probe)."""
        venv = self.venv_python()
        self.python = resolve_python(self.device, venv_python=venv if self.t.exists(venv) else None)
        self._set(python=self.python)
        return self.python

    def venv_python(self) -> str:
        return posixpath.join(self.workdir, device_scripts.VENV_PYTHON)

    def close(self) -> None:
        if self.t is not None:
            self.status.round_trips = self.t.round_trips
            self.t.close()

    def run_python(self, argv: list[str], timeout: float | None = None, **kw: Any) -> CommandResult:
        """Run ``python argv...`` on the device (deadline: ``timeout``, default the device's
        ``command_timeout``); a missing interpreter is a DeviceError kind "python"."""
        return self.run_command([self.python, *argv], timeout, **kw)

    def run_command(self, argv: list[str], timeout: float | None = None, **kw: Any) -> CommandResult:
        """Run ``argv`` (which runs ``self.python``: directly, or the probe's shell line that execs it) as
        :meth:`run_python` does."""
        timeout = self.device.command_timeout if timeout is None else timeout
        result = self.t.run(argv, timeout=timeout, **kw)
        if result.exit_code in (126, 127):
            raise DeviceError(self.device.name, f"python {self.python!r} cannot be run on the device "
                              f"({result.stderr.strip()[-300:]}); install python3, set `python:` in the "
                              f"inventory, or run `edgebench bootstrap --device {self.device.name}`",
                              kind="python")
        return result

    def agent_file(self) -> tuple[str, str, str]:
        """(local zipapp, its sha256, its path on the device): the name carries version and content."""
        from agent import __version__

        digest = sha256_of(self.agent_pyz)
        remote = posixpath.join(self.workdir, "agent", f"edgebench-agent-{__version__}-{digest[:8]}.pyz")
        return self.agent_pyz, digest, remote

    def ensure_agent(self) -> str:
        """Push the agent zipapp unless this version (and content) is already on the device; return its
        remote path."""
        local, digest, remote = self.agent_file()
        if not self.present(remote):
            self._set(state="pushing", detail="agent")
            self.push_verified([(local, digest, remote)])
        self.agent = remote
        return remote

    def agent_info(self, runtime: str | None = None) -> dict[str, Any]:
        """:meth:`ensure_agent` and :meth:`info` in one round trip (the agent rides along when absent)."""
        local, digest, remote = self.agent_file()
        self.agent = remote
        missing = [] if self.present(remote) else [(local, digest, remote)]
        if missing:
            self._set(state="pushing", detail="agent")
        return self.stage(missing, info_runtime=runtime, with_info=True)

    def push_verified(self, files: list[tuple[str, str, str]]) -> None:
        """Push (local, sha256, remote) files to temp names, verify on the device, rename into place - one
        round trip (:meth:`stage`). Raises DeviceError kind "push" on a mismatch, "disk_full" when the
        device's disk is full."""
        self.stage(files)

    def stage(self, files: list[tuple[str, str, str]], info_runtime: str | None = None,
              with_info: bool = False) -> dict[str, Any] | None:
        """One round trip: push ``files`` (local, sha256, remote) on the command's stdin, each verified on
        the device before it gets its final name; then, ``with_info``, ``agent info`` (as :meth:`info`
        with ``info_runtime``) and return its answer. Raises DeviceError kind "push" (mismatch, upload
        cut), "disk_full", or :meth:`agent_failure`'s for a failing info."""
        parts = [(local, digest, f"{remote}.part-{self.token}", remote) for local, digest, remote in files]
        self.parts_in_flight.extend(part for _, _, part, _ in parts)  # removed by the run if interrupted
        base = self.status.bytes_pushed
        chunks, total = device_scripts.stage_input(parts, self._info_argv(info_runtime) if with_info else None,
                                                   lambda n: self._set(bytes_pushed=base + n))
        timeout = self.device.command_timeout + total / MIN_PUSH_RATE
        result = self.run_python(["-c", device_scripts.STAGE_PY], timeout=timeout, stdin_data=chunks)
        answer = device_scripts.last_json_line(result.stdout) if result.ok else None
        if answer is None:
            disk = "No space" in result.stderr
            raise DeviceError(self.device.name, f"pushing and verifying files failed (exit {result.exit_code}): "
                              f"{(result.stderr or result.stdout).strip()[-500:]}",
                              kind="disk_full" if disk else "push")
        self.parts_in_flight.clear()  # the device script renamed or removed each of them
        error = answer.get("error")
        if error and error.get("kind") == "disk_full":
            raise DeviceError(self.device.name, f"disk full: {error['message']}; free space in {self.workdir} "
                              "or set another workdir", kind="disk_full")
        if error:
            raise DeviceError(self.device.name, f"pushing files failed: {error['message']}", kind="push")
        bad = {k: v for k, v in (answer.get("files") or {}).items() if v != "ok"}
        if bad:
            raise DeviceError(self.device.name, f"sha256 mismatch after upload (corrupted in transit or on "
                              f"the device's disk): {bad}", kind="push")
        self._set(bytes_pushed=base + total)
        if not with_info:
            return None
        info = answer.get("info") or {}
        argv = [self.python, *self._info_argv(info_runtime)]
        return self._parse_info(CommandResult(argv, int(info.get("exit_code", 70)), info.get("stdout", ""),
                                              info.get("stderr", ""), result.seconds))

    def run_batch(self, jobs: list[dict[str, Any]], out_dir: str, lock_timeout: float, per_job_seconds: float,
                  on_line: Callable[[str], None], extra: Sequence[str] = ()) -> CommandResult:
        """One ``agent batch -`` under the device lock: ``jobs`` (JobSpec dicts) as the first line of its
        stdin, which stays open while it runs (a controller that dies or gives up - Ctrl-C, deadline, dead
        link - makes the device see EOF and stop the batch, freeing its lock); each document is written
        to ``out_dir`` on the device and carried inline in its ``done`` event, given to ``on_line`` with
        every other output line. Deadline: the lock wait + ``per_job_seconds`` per job + 60 s.
        ``extra``: more ``agent batch`` options. Returns the result when the agent exited 0 or 1 (1: some
        job failed, which is data in its document); raises DeviceError (:meth:`agent_failure`) otherwise."""
        argv = [self.agent, "batch", "-", "--out", out_dir, "--lock", posixpath.join(self.workdir, "lock"),
                "--lock-timeout", f"{lock_timeout:g}", "--stop-on-stdin-eof", "--inline", *extra]
        deadline = lock_timeout + len(jobs) * per_job_seconds + 60
        result = self.run_python(argv, timeout=deadline, on_line=on_line, stdin_open=True,
                                 stdin_data=[(json.dumps(jobs) + "\n").encode()])
        if result.exit_code not in (0, 1):
            raise self.agent_failure("batch", result)
        return result

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

    def _info_argv(self, runtime: str | None) -> list[str]:
        argv = [self.agent or self.agent_file()[2], "info", "--json", "--workdir", self.workdir]
        return argv + ["--runtime", runtime] if runtime is not None else argv

    def info(self, runtime: str | None = None) -> dict[str, Any]:
        """``agent info --json`` on the device. ``runtime`` ("auto" or a name) import-checks only the
        runtime jobs would use (a run); None checks every installed one (``devices --check``).
        Raises DeviceError kind "agent" when it fails."""
        return self._parse_info(self.run_python(self._info_argv(runtime)))

    def _parse_info(self, result: CommandResult) -> dict[str, Any]:
        """The info document from an ``agent info --json`` result; :meth:`agent_failure` when it failed."""
        if not result.ok:
            raise self.agent_failure("info", result)
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            raise DeviceError(self.device.name, f"`agent info` printed no JSON: {result.stdout[-300:]!r}",
                              kind="agent") from exc
