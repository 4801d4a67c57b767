"""How the controller talks to a device: one interface, two implementations.

:class:`Transport` is the interface the fleet uses: ``run(argv, timeout)`` a command (an argv list, never
a shell string), ``put`` / ``put_bytes`` / ``get`` files, ``exists``, ``makedirs``, ``home``
and ``close``. :class:`LocalTransport` is this machine (``transport: local``, subprocess, no shell at
all); :class:`controller.fleet.ssh_transport.SSHTransport` is a device over SSH. A local session has the
remote session's interface, so one test body runs against both.

Trust model: a remote command string is built by :func:`shell_command` only — every argument is
quoted with ``shlex.quote`` — so names and paths with spaces, quotes, ``;``, ``$()`` or backticks reach
the device's shell as single words, never as code. Every ``run`` has a deadline; passing it closes the
command and raises :class:`CommandTimeout`.
"""

from __future__ import annotations

import abc
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from typing_extensions import Self

from controller.errors import DeviceError
from controller.fleet.inventory import Device

LineCallback = Callable[[str], None]
#: called with the bytes sent so far for one file
ByteCallback = Callable[[int], None]

TAIL_CHARS = 2000


def shell_command(argv: Sequence[str]) -> str:
    """The ONE place a remote command line is built: each argument quoted for a POSIX shell.

    Raises ValueError for an empty argv or an argument with a NUL byte (no shell can pass those).
    """
    if not argv:
        raise ValueError("empty command")
    for arg in argv:
        if "\x00" in str(arg):
            raise ValueError(f"argument contains a NUL byte: {arg!r}")
    return " ".join(shlex.quote(str(arg)) for arg in argv)


@dataclass
class CommandResult:
    """What a finished command left: exit code, full stdout, stderr (tail) and wall time."""

    argv: Sequence[str]
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self, device: str) -> CommandResult:
        """Return self when the exit code is 0; raise CommandFailed with the stderr tail otherwise."""
        if self.exit_code != 0:
            raise CommandFailed(device, self)
        return self


class CommandFailed(DeviceError):
    """A command on the device exited non-zero. Carries the whole :class:`CommandResult`."""

    def __init__(self, device: str, result: CommandResult):
        tail = (result.stderr or result.stdout).strip()[-TAIL_CHARS:]
        super().__init__(
            device,
            f"command {shell_command(result.argv)!r} exited {result.exit_code}: {tail or '(no output)'}",
            kind="command",
        )
        self.result = result


class CommandTimeout(DeviceError):
    """A command passed its deadline; it was closed (local: killed) and its output so far kept."""

    def __init__(self, device: str, argv: Sequence[str], timeout: float, stderr: str = ""):
        super().__init__(
            device,
            f"command {shell_command(argv)!r} passed its {timeout:g} s deadline and was stopped"
            + (f"; stderr: {stderr.strip()[-TAIL_CHARS:]}" if stderr.strip() else ""),
            kind="timeout",
        )
        self.argv = list(argv)


class Transport(abc.ABC):
    """A session with one device. Open with :meth:`connect`; reuse for all of its work; close."""

    def __init__(self, device: Device):
        self.device = device

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def host_key_fingerprint(self) -> str | None:
        """SHA256 fingerprint of the device's host key (None for local)."""
        return None

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the session. Raises DeviceError (or HostKeyError) with the reason."""

    @abc.abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        on_line: LineCallback | None = None,
        stdin_open: bool = False,
    ) -> CommandResult:
        """Run ``argv`` on the device and wait at most ``timeout`` seconds.

        ``on_line`` is called with each stdout line as it arrives. ``stdin_open`` keeps the command's
        standard input open while it runs (closed when the command ends, times out, or this side goes
        away), so a command that watches it (``agent batch --stop-on-stdin-eof``) stops with its caller.
        Returns the result whatever the exit code; raises CommandTimeout past the deadline, DeviceError
        when the link fails.
        """

    @abc.abstractmethod
    def put(self, local: str, remote: str, *, on_bytes: ByteCallback | None = None) -> int:
        """Copy the local file to ``remote`` (absolute path); return the bytes sent."""

    @abc.abstractmethod
    def put_bytes(self, data: bytes, remote: str) -> int:
        """Write ``data`` to the file ``remote``; return the bytes sent."""

    @abc.abstractmethod
    def get(self, remote: str, local: str) -> int:
        """Copy the device's file ``remote`` to ``local``; return the bytes received."""

    @abc.abstractmethod
    def exists(self, remote: str) -> bool:
        """Whether ``remote`` exists on the device."""

    @abc.abstractmethod
    def makedirs(self, remote: str) -> None:
        """Create the directory ``remote`` and its parents (no error when it exists)."""

    @abc.abstractmethod
    def home(self) -> str:
        """The login user's home directory on the device (to resolve ``~/`` in workdirs)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the session (idempotent)."""

    def expand(self, path: str) -> str:
        """``path`` with a leading ``~`` resolved to the device user's home."""
        if path == "~":
            return self.home()
        if path.startswith("~/"):
            return self.home().rstrip("/") + path[1:]
        return path


class LocalTransport(Transport):
    """This machine: subprocess with an argv list (no shell), and plain file copies."""

    def connect(self) -> None:
        return None

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        on_line: LineCallback | None = None,
        stdin_open: bool = False,
    ) -> CommandResult:
        shell_command(argv)  # the same argument checks as a remote command
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.PIPE if stdin_open else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            # What a shell would answer, so callers see one interface: 127 not found, 126 not executable.
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            return CommandResult(list(argv), code, "", f"{argv[0]}: {exc.strerror}", time.monotonic() - start)
        self._running = proc
        stderr_parts: list = []
        reader = threading.Thread(target=lambda: stderr_parts.append(proc.stderr.read()), daemon=True)
        reader.start()
        stdout_lines = []
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            _kill_group(proc)

        timer = threading.Timer(timeout, stop)
        timer.start()
        try:
            for line in proc.stdout:
                stdout_lines.append(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            proc.wait(timeout=max(0.1, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            stop()
            proc.wait(timeout=10)
        finally:
            timer.cancel()
            if proc.stdin is not None:
                proc.stdin.close()
            reader.join(timeout=10)
            self._running = None
        stderr = "".join(stderr_parts)
        seconds = time.monotonic() - start
        if timed_out.is_set():
            raise CommandTimeout(self.device.name, argv, timeout, stderr)
        return CommandResult(list(argv), proc.returncode, "".join(stdout_lines), stderr[-TAIL_CHARS:], seconds)

    def put(self, local: str, remote: str, *, on_bytes: ByteCallback | None = None) -> int:
        shutil.copyfile(local, remote)
        size = os.path.getsize(remote)
        if on_bytes is not None:
            on_bytes(size)
        return size

    def put_bytes(self, data: bytes, remote: str) -> int:
        with open(remote, "wb") as fh:
            fh.write(data)
        return len(data)

    def get(self, remote: str, local: str) -> int:
        shutil.copyfile(remote, local)
        return os.path.getsize(local)

    def exists(self, remote: str) -> bool:
        return os.path.exists(remote)

    def makedirs(self, remote: str) -> None:
        os.makedirs(remote, exist_ok=True)

    def home(self) -> str:
        return os.path.expanduser("~")

    def close(self) -> None:
        """Stop a command still running (e.g. after Ctrl-C): its process group, by PID."""
        proc = getattr(self, "_running", None)
        if proc is not None and proc.poll() is None:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group this transport started (the command and its workers), by its PID."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone: nothing left to stop


def open_transport(device: Device) -> Transport:
    """A connected transport for ``device``. Raises DeviceError / HostKeyError with the reason."""
    if device.is_local:
        transport: Transport = LocalTransport(device)
    else:
        from controller.fleet.ssh_transport import SSHTransport

        transport = SSHTransport(device)
    transport.connect()
    return transport
