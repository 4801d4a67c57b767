"""Where a device is over SSH and how to reach it with strict host-key checking (paramiko): the ssh config
applied to a device (:func:`resolve_endpoint`), the connect that refuses an unknown or changed host key
(:func:`connect_client`), and ``devices --trust`` (:func:`trust_host_key`), which records a key.
:class:`controller.fleet.ssh_transport.SSHTransport` runs commands over what :func:`connect_client`
returns.

Settings come, highest first, from the device entry, then the ssh config file (``ssh_config`` key or
``~/.ssh/config``: HostName, Port, User, IdentityFile, ProxyJump, UserKnownHostsFile), then SSH's
defaults.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from dataclasses import dataclass

from controller.errors import DeviceError, HostKeyError
from controller.fleet.inventory import Device

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


class RefuseUnknownKey:
    """paramiko policy: refuse a host key not in known_hosts, showing its fingerprint and the fix."""

    def __init__(self, device: Device, endpoint: Endpoint):
        self.device = device
        self.endpoint = endpoint

    def missing_host_key(self, client, hostname, key) -> None:
        raise HostKeyError(
            self.device.name,
            f"host key of {hostname} is not known ({key.get_name()} {fingerprint(key)}); not connecting. "
            f"If this is the right device, trust it with `edgebench devices --trust {self.device.name}` "
            f"(records it in {self.endpoint.known_hosts})",
            kind="host_key",
        )


def connect_client(device: Device, endpoint: Endpoint, sock):
    """A connected, authenticated paramiko SSHClient with strict host-key checking.

    Raises HostKeyError (unknown / changed key), DeviceError kind "auth" (refused) or "unreachable".
    """
    import paramiko

    client = paramiko.SSHClient()
    if os.path.isfile(endpoint.known_hosts):
        client.load_host_keys(endpoint.known_hosts)
    client.set_missing_host_key_policy(RefuseUnknownKey(device, endpoint))
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
        raise DeviceError(device.name, f"cannot connect to {where}: {exc or type(exc).__name__}",
                          kind="unreachable") from exc
    client.get_transport().set_keepalive(KEEPALIVE_SECONDS)
    return client


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
    """Write ``key`` for ``endpoint`` into its known_hosts, replacing an entry of the same key type."""
    import paramiko

    keys = paramiko.HostKeys()
    if os.path.isfile(endpoint.known_hosts):
        keys.load(endpoint.known_hosts)
    name = endpoint.host_key_name
    old = keys.lookup(name) or {}
    replaced = fingerprint(old[key.get_name()]) if key.get_name() in old else None
    if replaced == fingerprint(key):
        replaced = None
    for entry in list(keys._entries):  # paramiko keeps no public API to drop a host's entries
        if entry.key.get_name() == key.get_name() and any(
            h == name or (h.startswith("|1|") and paramiko.HostKeys.hash_host(name, h) == h)
            for h in entry.hostnames
        ):
            keys._entries.remove(entry)
    keys.add(name, key.get_name(), key)
    os.makedirs(os.path.dirname(os.path.abspath(endpoint.known_hosts)), exist_ok=True)
    keys.save(endpoint.known_hosts)
    return TrustedKey(name, fingerprint(key), replaced, endpoint.known_hosts)
