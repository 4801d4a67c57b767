"""A network namespace joined to this host by a veth pair: a "device" behind a link the tests can cut.

``NetNS.create()`` makes ``ip netns`` namespace ``ebN`` and a veth pair: ``ebhN`` on the host side with
``10.200.x.y+1/30``, ``ebdN`` inside with ``+2/30`` (a /30 of 10.200.0.0/16 that no interface here uses
yet; the addresses exist only on this pair, so traffic to them never leaves the machine). ``cut()`` /
``mend()`` set the host side down / up (this kernel has no netem; a downed link is the real thing: packets
stop, nothing answers). ``delete()`` removes the namespace (the veth pair goes with it). Needs root.
"""

from __future__ import annotations

import ipaddress
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

POOL = ipaddress.ip_network("10.200.0.0/16")
ATTEMPTS = 20


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip ARGS`` (bounded); raises CalledProcessError with its stderr when ``check`` and it fails."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _used_addresses() -> str:
    return ip("-4", "-o", "addr").stdout + ip("-4", "route").stdout


@dataclass
class NetNS:
    """One namespace + veth pair; ``address`` is the device's (inside), ``gateway`` the host side's."""

    name: str
    host_if: str
    device_if: str
    gateway: str
    address: str

    @property
    def exec_prefix(self) -> list[str]:
        """argv prefix that runs a command inside the namespace (``ip netns exec`` execs it: same PID)."""
        return ["ip", "netns", "exec", self.name]

    @classmethod
    def create(cls) -> NetNS:
        """Make a namespace on a free /30 of :data:`POOL`. Raises RuntimeError if none is found."""
        for _ in range(ATTEMPTS):
            index = random.randrange(1, 2 ** (30 - POOL.prefixlen))
            subnet = ipaddress.ip_network((int(POOL.network_address) + 4 * index, 30))
            gateway, address = (str(h) for h in subnet.hosts())
            name = f"eb{index}"
            if f" {gateway}/" in _used_addresses() or str(subnet) in _used_addresses():
                continue
            if ip("netns", "add", name, check=False).returncode != 0:
                continue  # another test session holds this index
            ns = cls(name=name, host_if=f"ebh{index}", device_if=f"ebd{index}", gateway=gateway, address=address)
            try:
                ns._wire(subnet.prefixlen)
            except subprocess.CalledProcessError as exc:
                ns.delete()
                raise RuntimeError(f"wiring netns {name} failed: {exc.stderr}") from exc
            return ns
        raise RuntimeError(f"no free /30 in {POOL} after {ATTEMPTS} tries")

    def _wire(self, prefix: int) -> None:
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.device_if)
        ip("link", "set", self.device_if, "netns", self.name)
        ip("addr", "add", f"{self.gateway}/{prefix}", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        ip("-n", self.name, "addr", "add", f"{self.address}/{prefix}", "dev", self.device_if)
        ip("-n", self.name, "link", "set", self.device_if, "up")
        ip("-n", self.name, "link", "set", "lo", "up")

    def cut(self) -> None:
        """The link goes down (host side): the device stops answering, its processes keep running."""
        ip("link", "set", self.host_if, "down")

    def mend(self) -> None:
        ip("link", "set", self.host_if, "up")

    def delete(self) -> None:
        """Remove the namespace and the veth pair (stop the processes inside first)."""
        ip("netns", "del", self.name, check=False)
        ip("link", "del", self.host_if, check=False)  # normally gone with the namespace already


def start_sshd(netns: NetNS, root: Path, name: str, authorized_keys: Path, extra_config: str = "",
               before: str = ""):
    """Start a :class:`tests.fixtures_fleet.SSHServer` on port 22 of ``netns``'s device address, with its
    own host key under ``root``; ``before`` is a shell command run inside the namespace first (sshd is
    exec'd after it, so the server's PID is sshd's). The caller stops it. Raises RuntimeError."""
    from tests.fixtures_fleet import SSHServer, keygen

    wrapper = list(netns.exec_prefix)
    if before:
        wrapper += ["sh", "-c", f'{before} && exec "$0" "$@"']
    server = SSHServer(name=name, root=root, port=22, host=netns.address, wrapper=wrapper,
                       host_key=keygen(root / "ssh_host_ed25519_key", f"host-{name}"))
    return server.start(authorized_keys, extra_config)
