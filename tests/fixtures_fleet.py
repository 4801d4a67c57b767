"""A real SSH fleet on 127.0.0.1 for the tests: N ``sshd`` processes, each a "device".

Each sshd runs as a child (``sshd -D -e -f CONF``) on a free loopback port with its own host key and an
authorized_keys holding one generated client key; each device gets its own workdir. The fixtures write a
devices.yaml and a known_hosts for them. Every sshd this module starts is terminated (by its PID) and
waited for at teardown.

Facts measured on this box: sshd needs ``/run/sshd``; ``UsePAM no`` and ``StrictModes no`` are needed to
log in as root with keys under /tmp; root's ``.bashrc`` runs ``pyenv init`` (~0.13 s per remote command).

Fixtures: ``ssh_key`` (client key path), ``sshd_factory`` (start more sshds), ``ssh_fleet`` (4 running
devices with devices.yaml + known_hosts, shared by the session).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
#: the "bare device" interpreter: numpy + ai-edge-litert only
DEVICE_PYTHON = str(REPO / ".venv-agent" / "bin" / "python")
START_DEADLINE = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path, comment: str) -> Path:
    """Generate an ed25519 key pair at ``path`` (+ .pub) with ssh-keygen."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    return path


@dataclass
class SSHServer:
    """One running sshd on 127.0.0.1 and the files that define it."""

    name: str
    root: Path
    port: int = 0
    host_key: Path | None = None
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"  #: the address it listens on (another one inside a test's network namespace)
    wrapper: list[str] = field(default_factory=list)  #: argv that execs sshd's argv (e.g. ip netns exec)

    @property
    def host_key_line(self) -> str:
        """The known_hosts line for this server."""
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        where = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{where} {kind} {blob}\n"

    def start(self, authorized_keys: Path, extra_config: str = "") -> SSHServer:
        """Start sshd and wait (bounded) until it accepts connections. Raises RuntimeError if not.
        ``extra_config`` lines come first (sshd keeps the first value of a keyword). ``wrapper`` must
        exec sshd (not fork it), so that ``proc`` is sshd itself and :meth:`stop` stops it by PID."""
        os.makedirs("/run/sshd", exist_ok=True)
        if self.host_key is None:
            self.host_key = keygen(self.root / "ssh_host_ed25519_key", f"host-{self.name}")
        for _attempt in range(5):
            self.port = self.port or free_port()
            conf = self.root / "sshd_config"
            conf.write_text(
                extra_config + f"Port {self.port}\nListenAddress {self.host}\nHostKey {self.host_key}\nPidFile none\n"
                f"AuthorizedKeysFile {authorized_keys}\nUsePAM no\nStrictModes no\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nAllowTcpForwarding yes\nSubsystem sftp internal-sftp\n"
                "MaxStartups 100:30:200\nMaxSessions 50\nLogLevel ERROR\n"
            )
            with open(self.root / "sshd.log", "ab") as log:
                self.proc = subprocess.Popen([*self.wrapper, SSHD, "-D", "-e", "-f", str(conf)], stdout=log,
                                             stderr=log, stdin=subprocess.DEVNULL)
            if self._wait_ready():
                return self
            self.stop()
            self.port = 0  # the port was taken in between: try another one
        raise RuntimeError(f"sshd {self.name} did not start; see {self.root / 'sshd.log'}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    sock.settimeout(2)
                    if sock.recv(4).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Terminate this sshd (the one we started, by PID) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


@dataclass
class SSHFactory:
    """Starts sshd "devices" under one directory; all share the client key."""

    root: Path
    key: Path
    servers: list[SSHServer] = field(default_factory=list)

    @property
    def authorized_keys(self) -> Path:
        path = self.root / "authorized_keys"
        if not path.exists():
            shutil.copyfile(self.key.with_suffix(".pub"), path)
        return path

    def start(self, name: str, extra_config: str = "") -> SSHServer:
        root = self.root / f"sshd-{len(self.servers)}"
        root.mkdir(parents=True)
        server = SSHServer(name=name, root=root).start(self.authorized_keys, extra_config)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


def device_entry(server: SSHServer, key: Path, known_hosts: Path, workdir: Path, **extra) -> dict:
    """A devices.yaml entry that reaches ``server`` as root with ``key``."""
    entry = {
        "name": server.name,
        "host": server.host,
        "port": server.port,
        "user": "root",
        "identity_file": str(key),
        "known_hosts": str(known_hosts),
        "workdir": str(workdir),
        "python": DEVICE_PYTHON,
        "connect_timeout": 5,
        "command_timeout": 300,
        "tags": ["ssh", "loopback"],
    }
    entry.update(extra)
    return entry


def write_inventory(path: Path, entries: list[dict], defaults: dict | None = None) -> Path:
    """Write a devices.yaml with ``entries`` (and ``defaults``) to ``path``."""
    path.write_text(yaml.safe_dump({"defaults": defaults or {"python": "python3"}, "devices": entries},
                                   sort_keys=False))
    return path


@dataclass
class Fleet:
    """Running loopback devices and the files that describe them."""

    root: Path
    key: Path
    known_hosts: Path
    servers: list[SSHServer]
    workdirs: dict[str, Path]
    entries: list[dict]

    def inventory(self, path: Path, *, local: bool = False, names: list[str] | None = None) -> Path:
        """Write a devices.yaml of the fleet's devices (optionally plus a local device) to ``path``."""
        entries = [e for e in self.entries if names is None or e["name"] in names]
        if local:
            entries = entries + [{"name": "local", "transport": "local", "tags": ["local"],
                                  "workdir": str(self.root / "local workdir")}]
        return write_inventory(path, entries)


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory) -> Path:
    """The client key every loopback device accepts."""
    return keygen(tmp_path_factory.mktemp("client-key") / "id_ed25519", "edgebench-tests")


@pytest.fixture(scope="session")
def sshd_factory(tmp_path_factory, ssh_key):
    """Start extra loopback sshd devices; all are stopped at the end of the session."""
    factory = SSHFactory(root=tmp_path_factory.mktemp("sshd"), key=ssh_key)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def ssh_fleet(tmp_path_factory, sshd_factory, ssh_key) -> Fleet:
    """Four running loopback devices with their own workdirs, a known_hosts with their host keys."""
    root = tmp_path_factory.mktemp("fleet")
    known_hosts = root / "known_hosts"
    servers = [sshd_factory.start(f"board-{i}") for i in range(4)]
    known_hosts.write_text("".join(s.host_key_line for s in servers))
    workdirs = {s.name: root / f"work {s.name}" for s in servers}
    entries = [device_entry(s, ssh_key, known_hosts, workdirs[s.name]) for s in servers]
    return Fleet(root=root, key=ssh_key, known_hosts=known_hosts, servers=servers, workdirs=workdirs,
                 entries=entries)
