"""An emulated aarch64 board for the tests: sshd chrooted into a Debian arm64 rootfs in its own netns.

The board is this host's sshd (``ChrootDirectory`` = the cached rootfs of ``tests/arm_rootfs.py``, built
by ``make arm-rootfs``), run by PID inside a network namespace (``tests/netns.py``) and listening only
on the namespace's address. Every session command runs in the chroot, so ``python3`` there is the
aarch64 Debian interpreter, run by qemu-user through binfmt_misc: ``platform.machine()`` says aarch64
and the runtime is the aarch64 tflite-runtime 2.14 wheel. ``/proc`` is mounted into the rootfs in the
sshd's private mount namespace (``ip netns exec`` makes one), so the host never sees that mount.

Two "boards" share the one sshd (the rootfs is the same; what differs is the interpreter a devices.yaml
entry names): ``ArmBoard.ready_entry`` uses ``/opt/tflite-venv/bin/python3`` (numpy + tflite-runtime),
``ArmBoard.fresh_entry`` the system ``python3`` (no numpy, no runtime: what a new board looks like).
Each entry gets its own workdir under the rootfs's ``/tmp``; all are removed at the end of the session.

Timings under emulation mean nothing; the path is what is tested.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import arm_rootfs
from tests.fixtures_fleet import SSHServer, device_entry
from tests.netns import NetNS, start_sshd


@dataclass
class ArmBoard:
    """A running emulated aarch64 SSH device and the files that describe it."""

    server: SSHServer
    netns: NetNS
    tree: arm_rootfs.ArmRootfs
    key: Path
    known_hosts: Path
    scratch: str  #: this session's folder inside the rootfs (a device path)
    workdirs: list[str] = field(default_factory=list)

    @property
    def wheels(self) -> Path:
        """aarch64 / cp311 wheels of numpy 1.26.4 and tflite-runtime 2.14.0 (downloaded at set-up)."""
        return self.tree.wheels

    def host_path(self, device_path: str) -> Path:
        """Where a path on the board lies on this host."""
        return self.tree.rootfs / device_path.lstrip("/")

    def new_workdir(self, label: str) -> str:
        """A fresh workdir path on the board (created by the controller on first contact)."""
        path = f"{self.scratch}/{label}-{len(self.workdirs)}"
        self.workdirs.append(path)
        return path

    def _entry(self, name: str, python: str | None, **extra) -> dict:
        entry = device_entry(self.server, self.key, self.known_hosts, Path(self.new_workdir(name)),
                             tags=["ssh", "arm", "emulated"], command_timeout=600, connect_timeout=10, **extra)
        entry["name"] = name
        if python is None:
            entry.pop("python")  # the inventory's default: the board's system python3
        else:
            entry["python"] = python
        return entry

    def ready_entry(self, name: str = "arm-board", **extra) -> dict:
        """A devices.yaml entry for the board with numpy + tflite-runtime 2.14 (aarch64)."""
        return self._entry(name, self.tree.runtime_python, **extra)

    def fresh_entry(self, name: str = "arm-fresh", **extra) -> dict:
        """A devices.yaml entry for the board as it comes: system python3, no numpy, no runtime."""
        return self._entry(name, None, **extra)


@pytest.fixture(scope="session")
def arm_board(tmp_path_factory, ssh_key) -> Iterator[ArmBoard]:
    """The emulated aarch64 board (see the module doc); stopped and cleaned up at the end of the session.
    Fails (does not skip) with the fix when the rootfs has not been built."""
    tree = arm_rootfs.cached()
    if not tree.ready:
        pytest.fail(f"the arm64 rootfs {tree.folder} is not built: run `make arm-rootfs` (make test does)")
    try:
        arm_rootfs.ensure_binfmt()
    except arm_rootfs.RootfsError as exc:
        pytest.fail(str(exc))
    root = tmp_path_factory.mktemp("arm-board")
    authorized_keys = root / "authorized_keys"
    shutil.copyfile(ssh_key.with_suffix(".pub"), authorized_keys)
    scratch = f"/tmp/edgebench-test-{uuid.uuid4().hex[:12]}"
    netns = NetNS.create()
    server = None
    try:
        server = start_sshd(netns, root, "arm", authorized_keys, extra_config=f"ChrootDirectory {tree.rootfs}\n",
                            before=f'mount -t proc proc "{tree.rootfs / "proc"}"')
        known_hosts = root / "known_hosts"
        known_hosts.write_text(server.host_key_line)
        yield ArmBoard(server=server, netns=netns, tree=tree, key=ssh_key, known_hosts=known_hosts,
                       scratch=scratch)
    finally:
        if server is not None:
            server.stop()
        netns.delete()
        shutil.rmtree(tree.rootfs / scratch.lstrip("/"), ignore_errors=True)
