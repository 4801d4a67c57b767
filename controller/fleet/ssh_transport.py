"""A device over SSH (paramiko): one connection per device, reused for all of its work.

Trust model: host keys are checked strictly. A key that is not in the known_hosts file in use is refused
(:class:`~controller.errors.HostKeyError`, showing its SHA256 fingerprint and the command that trusts
it: ``edgebench devices --trust NAME``); a key that differs from the recorded one is refused the same
way. Authentication is by key only: ``identity_file``, the keys ssh-agent holds, or the default
``~/.ssh/id_*`` files. Remote commands are built by :func:`controller.fleet.transport.shell_command`, the one
quoting function. Deadlines: connect, banner and auth each wait at most ``connect_timeout``; every
command at most its own timeout; keepalives every few seconds and a dead transport is noticed by the
command loop.

Where the device is (the ssh config), the strict host-key connect and ``--trust``:
:mod:`controller.fleet.ssh_connect`.
"""
from __future__ import annotations

import logging
import os
import select
import stat
import threading
import time
from collections.abc import Iterable, Sequence

from controller.errors import DeviceError
from controller.fleet.inventory import Device
from controller.fleet.ssh_connect import KEEPALIVE_SECONDS, connect_client, fingerprint, resolve_endpoint
from controller.fleet.stall import StallGuard
from controller.fleet.transport import (
    TAIL_CHARS,
    ByteCallback,
    CommandResult,
    CommandTimeout,
    LineCallback,
    Transport,
    shell_command,
)

log = logging.getLogger(__name__)



class _LinkWatch:
    """Notices a dead link while a command is silent: after ``quiet`` seconds without data it sends a
    keepalive that wants a reply (in a helper thread: paramiko's wait has no deadline); no reply within
    ``dead_after`` seconds means the link is dead. Any data from the device counts as a reply."""

    def __init__(self, transport, quiet: float, dead_after: float):
        self.transport = transport
        self.quiet = quiet
        self.dead_after = dead_after
        self.last = time.monotonic()
        self.probe: threading.Thread | None = None
        self.probe_started = 0.0

    def heard(self) -> None:
        self.last = time.monotonic()

    def _probe(self) -> None:
        import paramiko

        try:
            self.transport.global_request("keepalive@openssh.com", wait=True)
        except (OSError, EOFError, paramiko.SSHException):  # the link closed under the probe: the run loop
            pass  # sees the dead transport and says so

    def dead(self) -> bool:
        now = time.monotonic()
        if self.probe is not None and not self.probe.is_alive():
            self.probe = None
            self.last = now  # the device answered the keepalive
        if self.probe is None and now - self.last > self.quiet:
            self.probe = threading.Thread(target=self._probe, daemon=True)
            self.probe_started = now
            self.probe.start()
        return self.probe is not None and now - self.probe_started > self.dead_after


class SSHTransport(Transport):
    """One paramiko connection (plus one SFTP session on it) to one device."""

    keepalive_seconds = KEEPALIVE_SECONDS  #: silence before a command's link is probed
    dead_after_seconds = 15.0  #: unanswered probe after which the link counts as dead

    @property
    def sftp_silence_seconds(self) -> float:
        """How long one SFTP request may go unanswered before the link counts as dead."""
        return min(self.device.command_timeout, self.keepalive_seconds + self.dead_after_seconds)

    def __init__(self, device: Device):
        super().__init__(device)
        self.endpoint = resolve_endpoint(device)
        self._client = None
        self._jump = None
        self._sftp = None
        self._home: str | None = None
        self._fingerprint: str | None = None

    @property
    def host_key_fingerprint(self) -> str | None:
        return self._fingerprint

    def connect(self) -> None:
        sock = None
        if self.endpoint.proxy_jump:
            gateway = resolve_endpoint(self.device, self.endpoint.proxy_jump)
            self._jump = connect_client(self.device, gateway, None)
            try:
                sock = self._jump.get_transport().open_channel(
                    "direct-tcpip",
                    (self.endpoint.hostname, self.endpoint.port),
                    ("127.0.0.1", 0),
                    timeout=self.device.connect_timeout,
                )
            except Exception as exc:  # paramiko raises ChannelException / SSHException / OSError
                self.close()
                raise DeviceError(
                    self.device.name,
                    f"gateway {self.endpoint.proxy_jump} could not reach "
                    f"{self.endpoint.hostname}:{self.endpoint.port}: {exc}",
                    kind="unreachable",
                ) from exc
        try:
            self._client = connect_client(self.device, self.endpoint, sock)
            self._fingerprint = fingerprint(self._client.get_transport().get_remote_server_key())
        except Exception:
            self.close()
            raise

    def _open_files(self) -> None:
        """Open the SFTP session, on the first file operation only: a run that needs none (the lean
        path: commands carry files on stdin) does not pay its round trips."""
        self._transport()
        try:
            self._sftp = self._client.open_sftp()  # a dead link is the stall guard's (see _sftp_call)
        except Exception as exc:  # paramiko raises SSHException / OSError / EOFError
            self._files_open = False
            raise DeviceError(self.device.name, f"cannot open an SFTP session: {exc}", kind="sftp") from exc

    def _transport(self):
        if self._client is None:
            raise DeviceError(self.device.name, "not connected", kind="unreachable")
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise DeviceError(self.device.name, "the SSH connection was lost", kind="unreachable")
        return transport

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        on_line: LineCallback | None = None,
        stdin_open: bool = False,
        stdin_data: Iterable[bytes] | None = None,
    ) -> CommandResult:
        command = shell_command(argv)
        self._count()
        start = time.monotonic()
        deadline = start + timeout
        writer = None
        try:
            channel = self._transport().open_session(timeout=min(timeout, self.device.connect_timeout))
            channel.exec_command(command)
            if stdin_data is not None:
                writer = threading.Thread(target=_feed, args=(channel, stdin_data, not stdin_open), daemon=True)
                writer.start()
            elif not stdin_open:  # else the remote stdin stays open until the channel closes
                channel.shutdown_write()
        except DeviceError:
            raise
        except Exception as exc:
            raise DeviceError(self.device.name, f"cannot start {command!r}: {exc}", kind="unreachable") from exc
        out = bytearray()
        pending = b""
        err = bytearray()
        link = _LinkWatch(self._transport(), self.keepalive_seconds, self.dead_after_seconds)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeout(self.device.name, argv, timeout, err.decode("utf-8", "replace"))
                while channel.recv_ready():
                    data = channel.recv(65536)
                    out += data
                    pending += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        if on_line is not None:
                            on_line(line.decode("utf-8", "replace"))
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                    del err[: max(0, len(err) - 4 * TAIL_CHARS)]
                drained = not channel.recv_ready() and not channel.recv_stderr_ready()
                if channel.exit_status_ready() and drained and (channel.eof_received or channel.closed):
                    break
                if not link.transport.is_active():  # (self._client is None once close() ran)
                    raise DeviceError(self.device.name, f"connection lost while running {command!r}",
                                      kind="unreachable")
                if select.select([channel], [], [], min(remaining, 1.0))[0]:
                    link.heard()
                elif link.dead():
                    self.close()
                    raise DeviceError(self.device.name, f"no answer to keepalives for {link.dead_after:g} s "
                                      f"while running {command!r}: the link is dead", kind="unreachable")
            if pending and on_line is not None:
                on_line(pending.decode("utf-8", "replace"))
            code = channel.recv_exit_status()
        finally:
            _close_channel(channel)
            if writer is not None:
                writer.join(timeout=10)  # a closed channel ends a blocked send
        return CommandResult(
            list(argv), code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")[-TAIL_CHARS:],
            time.monotonic() - start,
        )

    def _sftp_call(self, what: str, method, *args, **kwargs):
        """``method(*args, **kwargs)`` on the SFTP session (a method name, or a function that uses
        ``self._sftp``), opening the session first when needed: one counted round trip. A ``callback``
        kwarg (bytes moved) also feeds the stall guard. No progress for :attr:`sftp_silence_seconds` (a
        dead link) is kind "unreachable"."""
        transport = self._transport()
        guard = StallGuard(transport.sock, self.sftp_silence_seconds)
        if "callback" in kwargs:
            callback = kwargs["callback"]
            kwargs["callback"] = guard.progress if callback is None else (
                lambda sent, total: (guard.progress(), callback(sent, total)))
        try:
            with guard:
                self._file_operation()  # the session's opening is watched by the guard too
                func = method if callable(method) else getattr(self._sftp, method)
                return func(*args, **kwargs)
        except Exception as exc:
            if not guard.fired:
                error = self._sftp_error(what, exc)
                if error is exc:
                    raise
                raise error from exc
            self.close()
            raise DeviceError(self.device.name, f"no answer for {self.sftp_silence_seconds:g} s during {what}: "
                              "the link is dead (or the device hangs)", kind="unreachable") from exc

    def _sftp_error(self, what: str, exc: Exception) -> Exception:
        """The DeviceError for a failed SFTP call: the connection dropped mid-transfer, disk full, another
        SFTP failure; other exceptions (FileNotFoundError included) as they are."""
        import paramiko

        if isinstance(exc, (paramiko.SSHException, EOFError)):  # "Server connection dropped" mid-transfer
            detail = str(exc) or type(exc).__name__
            return DeviceError(self.device.name, f"{what} failed: the SSH connection was lost ({detail})",
                               kind="unreachable")
        if isinstance(exc, FileNotFoundError) or not isinstance(exc, OSError):
            return exc
        kind = "disk_full" if "No space" in str(exc) or getattr(exc, "errno", None) == 28 else "sftp"
        return DeviceError(self.device.name, f"{what} failed: {exc}", kind=kind)

    def put(self, local: str, remote: str, *, on_bytes: ByteCallback | None = None) -> int:
        callback = (lambda sent, total: on_bytes(sent)) if on_bytes else None
        attrs = self._sftp_call(f"upload of {local} to {remote}", "put", local, remote,
                                callback=callback, confirm=True)
        return attrs.st_size

    def put_bytes(self, data: bytes, remote: str) -> int:
        def write() -> None:
            with self._sftp.open(remote, "wb") as fh:
                fh.write(data)

        self._sftp_call(f"writing {remote}", write)
        return len(data)

    def get(self, remote: str, local: str) -> int:
        self._sftp_call(f"download of {remote}", "get", remote, local, callback=None)
        return os.path.getsize(local)

    def exists(self, remote: str) -> bool:
        try:
            self._sftp_call(f"stat of {remote}", "stat", remote)
        except FileNotFoundError:
            return False
        return True

    def makedirs(self, remote: str) -> None:
        parts = remote.rstrip("/").split("/")
        for i in range(2, len(parts) + 1):
            path = "/".join(parts[:i])
            try:
                attrs = self._sftp_call(f"stat of {path}", "stat", path)
            except FileNotFoundError:
                try:
                    self._sftp_call(f"mkdir {path}", "mkdir", path)
                    continue
                except DeviceError:  # SFTP says only "Failure": another controller may have made it just now
                    attrs = self._sftp_call(f"stat of {path}", "stat", path)
            if not stat.S_ISDIR(attrs.st_mode):
                raise DeviceError(self.device.name, f"{path} exists and is not a directory", kind="workdir")

    def home(self) -> str:
        if self._home is None:
            self._home = self._sftp_call("resolving the home directory", "normalize", ".")
        return self._home

    def close(self) -> None:
        """Close the SFTP session and the connections. Safe from another thread while a transfer or a
        command runs (Ctrl-C): paramiko may then raise EOFError / socket errors from its own close, which
        are logged, never raised, so every part gets closed."""
        self._files_open = False
        objs, (self._sftp, self._client, self._jump) = (self._sftp, self._client, self._jump), (None, None, None)
        for obj in objs:
            if obj is not None:
                try:
                    obj.close()
                except Exception as exc:  # noqa: BLE001 - EOFError, OSError, SSHException: best effort, see docstring
                    log.debug("%s: closing %s: %s", self.device.name, type(obj).__name__, exc)


def _feed(channel, chunks: Iterable[bytes], close: bool) -> None:
    """Send ``chunks`` to the command's stdin, then close its stdin when ``close``. A command that ended
    (it failed, e.g. its disk is full) or a closed channel ends the sending: the result tells why."""
    try:
        for chunk in chunks:
            channel.sendall(chunk)
        if close:
            channel.shutdown_write()
    except (OSError, EOFError):  # socket.error "Socket is closed" once the command is gone
        return


def _close_channel(channel) -> None:
    """Close a command's channel. On a link that just died paramiko raises EOFError / OSError while it
    sends the close: the channel is gone either way, and the error that matters (the command's result, or
    the DeviceError "connection lost" raised in the ``try``) must not be replaced by that one."""
    import paramiko

    try:
        channel.close()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        log.debug("closing a channel on a dead link: %s", type(exc).__name__)
