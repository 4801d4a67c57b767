"""A device over SSH (paramiko): one connection per device, reused for all of its work.

Trust model: host keys are checked strictly. A key that is not in the known_hosts file in use is refused
(:class:`~controller.errors.HostKeyError`, showing its SHA256 fingerprint and the command that trusts
it: ``edgebench devices --trust NAME``); a key that differs from the recorded one is refused the same
way. Authentication is by key only: ``identity_file``, the keys ssh-agent holds, or the default
``~/.ssh/id_*`` files. Remote commands are built by :func:`controller.fleet.transport.shell_command`, the one
quoting function. Deadlines: connect, banner and auth each wait at most ``connect_timeout``; every
command at most its own timeout; keepalives every few seconds and a dead transport is noticed by the
command loop.

Settings come, highest first, from the device entry, then the ssh config file (``ssh_config`` key or
``~/.ssh/config``: HostName, Port, User, IdentityFile, ProxyJump, UserKnownHostsFile), then SSH's
defaults.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import select
import socket
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.regular_file import NotRegularFile, check_regular
from controller.errors import ConfigError, DeviceError, HostKeyError
from controller.fleet import known_hosts
from controller.fleet.inventory import Device
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

KEEPALIVE_SECONDS = 5
DEFAULT_SSH_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect, after the ssh config was applied."""

    host: str  #: the name the user gave (alias or address)
    hostname: str  #: the address actually dialled
    port: int
    user: str | None
    identity_files: tuple[str, ...]
    known_hosts: str
    proxy_jump: str | None

    @property
    def host_key_name(self) -> str:
        """The name of this host in known_hosts (``[host]:port`` unless the port is 22)."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def fingerprint(key) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a paramiko public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def resolve_endpoint(device: Device, host: str | None = None) -> Endpoint:
    """Apply the ssh config to ``device`` (or to the gateway ``host``, ``[user@]host[:port]``).

    Device keys win over the ssh config; the config wins over SSH's defaults. Raises ConfigError-like
    DeviceError when the ssh config file given in the inventory does not exist.
    """
    import paramiko

    user = port = None
    if host is None:
        name, user, port = device.host or device.name, device.user, device.port
    else:
        name = host
        if "@" in name:
            user, name = name.rsplit("@", 1)
        if name.count(":") == 1:
            name, port_text = name.split(":")
            port = int(port_text)
    config_path = device.ssh_config or os.path.expanduser(DEFAULT_SSH_CONFIG)
    options: dict = {}
    if os.path.isfile(config_path):
        options = paramiko.SSHConfig.from_path(config_path).lookup(name)
    elif device.ssh_config:
        raise DeviceError(device.name, f"ssh config {device.ssh_config!r} (key 'ssh_config') does not exist",
                          kind="config")
    # A gateway is tried with the device's key too: one lab key is the common case.
    identity: list[str] = [device.identity_file] if device.identity_file else []
    identity += [os.path.expanduser(p) for p in options.get("identityfile", [])]
    known = device.known_hosts or options.get("userknownhostsfile", "").split(" ")[0] or DEFAULT_KNOWN_HOSTS
    jump = options.get("proxyjump") if host is None else None
    if host is None and device.proxy_jump:
        jump = device.proxy_jump
    return Endpoint(
        host=name,
        hostname=options.get("hostname", name),
        port=int(port or options.get("port", 22)),
        user=user or options.get("user"),
        identity_files=tuple(identity),
        known_hosts=os.path.expanduser(known),
        proxy_jump=jump if jump and jump.lower() != "none" else None,
    )


class _RefuseUnknownKey:
    """paramiko policy: refuse a host key not in known_hosts, showing its fingerprint and the fix; a key
    on an ``@revoked`` line (left out of the trusted keys, so it arrives here) is refused as revoked."""

    def __init__(self, device: Device, endpoint: Endpoint, known: known_hosts.KnownHosts):
        self.device = device
        self.endpoint = endpoint
        self.known = known

    def missing_host_key(self, client, hostname, key) -> None:
        revoked = self.known.revoked_line(key)
        if revoked:
            raise HostKeyError(
                self.device.name,
                f"host key of {hostname} ({key.get_name()} {fingerprint(key)}) is REVOKED in "
                f"{self.endpoint.known_hosts} (line {revoked}); not connecting. The device offers a key its "
                "owner withdrew: ask which key it should have",
                kind="host_key",
            )
        raise HostKeyError(
            self.device.name,
            f"host key of {hostname} is not known ({key.get_name()} {fingerprint(key)}); not connecting. "
            f"If this is the right device, trust it with `edgebench devices --trust {self.device.name}` "
            f"(records it in {self.endpoint.known_hosts}){self.known.ca_note()}",
            kind="host_key",
        )


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
            self._jump = _connect_client(self.device, gateway, None)
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
            self._client = _connect_client(self.device, self.endpoint, sock)
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


def _connect_client(device: Device, endpoint: Endpoint, sock):
    """A connected, authenticated paramiko SSHClient with strict host-key checking.

    Raises HostKeyError (unknown / changed key), DeviceError kind "auth" (refused) or "unreachable".
    """
    import paramiko

    if device.identity_file and endpoint.identity_files[:1] == (device.identity_file,):
        try:
            check_regular(device.identity_file)
        except NotRegularFile as exc:
            raise DeviceError(device.name, f"identity_file {exc}; fix the device's 'identity_file' key",
                              kind="config") from None
    try:
        known = known_hosts.read(endpoint.known_hosts)
    except ConfigError as exc:
        raise DeviceError(device.name, str(exc), kind="config") from None
    client = paramiko.SSHClient()
    known.fill(client.get_host_keys())
    client.set_missing_host_key_policy(_RefuseUnknownKey(device, endpoint, known))
    where = f"{endpoint.user + '@' if endpoint.user else ''}{endpoint.hostname}:{endpoint.port}"
    try:
        client.connect(
            endpoint.hostname,
            port=endpoint.port,
            username=endpoint.user,
            key_filename=list(endpoint.identity_files) or None,
            look_for_keys=not endpoint.identity_files,
            allow_agent=True,
            timeout=device.connect_timeout,
            banner_timeout=device.connect_timeout,
            auth_timeout=device.connect_timeout,
            channel_timeout=device.connect_timeout,
            sock=sock,
        )
    except HostKeyError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(
            device.name,
            f"host key of {endpoint.host_key_name} CHANGED: {endpoint.known_hosts} has "
            f"{fingerprint(exc.expected_key)}, the device offers {exc.key.get_name()} {fingerprint(exc.key)}. "
            "Someone may be intercepting the connection; if the device was reinstalled, trust the new key "
            f"with `edgebench devices --trust {device.name}`",
            kind="host_key",
        ) from exc
    except paramiko.AuthenticationException as exc:
        client.close()
        keys = ", ".join(endpoint.identity_files) or "ssh-agent / ~/.ssh/id_*"
        raise DeviceError(device.name, f"authentication refused at {where} (keys tried: {keys}): {exc}",
                          kind="auth") from exc
    except (OSError, paramiko.SSHException, EOFError) as exc:
        client.close()
        kind, reason = connect_failure(exc, device.connect_timeout)
        raise DeviceError(device.name, f"cannot connect to {where}: {reason}", kind=kind) from exc
    client.get_transport().set_keepalive(KEEPALIVE_SECONDS)
    return client


def connect_failure(exc: BaseException, timeout: float) -> tuple[str, str]:
    """(kind, reason in words) for an exception paramiko raised while connecting; paramiko's own texts
    ("No existing session", "[Errno None] Unable to connect to port 22 on ...") do not say what to do."""
    import paramiko

    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        codes = {getattr(e, "errno", None) for e in exc.errors.values()}
        if codes <= {errno.ECONNREFUSED, None}:
            return "unreachable", "connection refused: nothing listens on that port (is sshd running? is the port right?)"
        return "unreachable", "; ".join(sorted({str(e) for e in exc.errors.values()}))
    if isinstance(exc, socket.gaierror):
        return "unreachable", f"the host name does not resolve ({exc.strerror}); check 'host' or the ssh config"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "unreachable", (f"no answer within {timeout:g} s (connect_timeout): the device is down, "
                               "unreachable or filtered")
    if isinstance(exc, ConnectionRefusedError):
        return "unreachable", "connection refused: nothing listens on that port (is sshd running? is the port right?)"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable", f"{exc.strerror}: no route to the device; check the network"
    text = str(exc)
    if "No existing session" in text or "No authentication methods available" in text:
        return "auth", ("no key to log in with: set the device's 'identity_file', load a key into ssh-agent, or "
                        "create ~/.ssh/id_ed25519")
    if isinstance(exc, EOFError) or "Error reading SSH protocol banner" in text:
        return "unreachable", ("the connection closed during the SSH handshake: is it an SSH server? (or the "
                               "server refused more connections: MaxStartups)")
    return "unreachable", text or type(exc).__name__


@dataclass(frozen=True)
class TrustedKey:
    """A host key ``devices --trust`` recorded."""

    host: str  #: the known_hosts name (``[host]:port`` unless port 22)
    fingerprint: str
    replaced: str | None  #: the fingerprint it replaced (a changed key), or None
    known_hosts: str


def trust_host_key(device: Device) -> list[TrustedKey]:
    """Fetch the device's host key (and its gateway's, when ``proxy_jump`` is set and the gateway's key is
    not recorded or differs) and record them in the known_hosts file in use.

    A changed key replaces the old entry: the user named this device explicitly. Returns what was
    recorded, gateway first. Raises DeviceError when the device or its gateway cannot be reached.
    """
    import paramiko

    endpoint = resolve_endpoint(device)
    trusted: list[TrustedKey] = []
    jump = None
    try:
        if endpoint.proxy_jump:
            gateway = resolve_endpoint(device, endpoint.proxy_jump)
            direct = socket.create_connection((gateway.hostname, gateway.port), timeout=device.connect_timeout)
            gateway_key = _fetch_key(device, direct)
            trusted.append(_record_key(gateway, gateway_key))
            jump = _connect_client(device, gateway, None)
            sock = jump.get_transport().open_channel(
                "direct-tcpip", (endpoint.hostname, endpoint.port), ("127.0.0.1", 0),
                timeout=device.connect_timeout,
            )
        else:
            sock = socket.create_connection((endpoint.hostname, endpoint.port), timeout=device.connect_timeout)
        key = _fetch_key(device, sock)
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise DeviceError(device.name, f"cannot reach {endpoint.host_key_name} to fetch its host key: {exc}",
                          kind="unreachable") from exc
    finally:
        if jump is not None:
            jump.close()
    trusted.append(_record_key(endpoint, key))
    return trusted


def _fetch_key(device: Device, sock):
    """The host key a server offers on ``sock`` (no authentication; the socket is closed after)."""
    import paramiko

    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = device.connect_timeout
        transport.start_client(timeout=device.connect_timeout)
        return transport.get_remote_server_key()
    finally:
        transport.close()


def _record_key(endpoint: Endpoint, key) -> TrustedKey:
    """Write ``key`` for ``endpoint`` into its known_hosts, replacing an entry of the same key type and
    keeping every other line. Raises ConfigError when it was not recorded (revoked key, not a regular
    file, cannot write)."""
    name = endpoint.host_key_name
    replaced = known_hosts.record(endpoint.known_hosts, name, key)
    old = None
    if replaced:
        digest = hashlib.sha256(base64.b64decode(replaced)).digest()
        old = "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
    return TrustedKey(name, fingerprint(key), old, endpoint.known_hosts)


def _close_channel(channel) -> None:
    """Close a command's channel. On a link that just died paramiko raises EOFError / OSError while it
    sends the close: the channel is gone either way, and the error that matters (the command's result, or
    the DeviceError "connection lost" raised in the ``try``) must not be replaced by that one."""
    import paramiko

    try:
        channel.close()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        log.debug("closing a channel on a dead link: %s", type(exc).__name__)
