"""Where a device is and the strict connect: the ssh config applied (HostName, Port, User, IdentityFile,
ProxyJump, UserKnownHostsFile), the host key checked against known_hosts (unknown, changed or
``@revoked`` keys refused with their SHA256 fingerprint), connect failures said in words, and
``edgebench devices --trust`` (recording a key without losing a line of known_hosts).

Settings come, highest first, from the device entry, then the ssh config file (``ssh_config`` key or
``~/.ssh/config``), then SSH's defaults. Authentication is by key only.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import socket
from dataclasses import dataclass

from agent.regular_file import NotRegularFile, check_regular
from controller.errors import ConfigError, DeviceError, HostKeyError
from controller.fleet import known_hosts
from controller.fleet.inventory import Device

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 5  #: SSH keepalive interval of every connection
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


def connect_client(device: Device, endpoint: Endpoint, sock):
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
            jump = connect_client(device, gateway, None)
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
