"""Build (once) and cache the Debian arm64 root file system of the emulated aarch64 test "device".

``python -m tests.arm_rootfs`` (``make arm-rootfs``) prints each step and is idempotent: the result is
cached under ``$EDGEBENCH_ARM_CACHE`` (default ``/var/cache/edgebench-test``) in a folder named after a
hash of :data:`RECIPE`, so a changed recipe builds a new tree and an unchanged one costs nothing.
Needs root, network access to the Debian mirror and PyPI (set-up time only), and Debian's
``qemu-user-static``, ``binfmt-support`` and ``debootstrap`` (scripts/system-deps.sh installs them).

What the cached folder holds (``ArmRootfs``):

- ``rootfs/`` — ``debootstrap --variant=minbase`` of bookworm arm64 with python3 (3.11) and python3-venv.
  Its ``/usr/bin/python3`` is a "fresh board": no numpy, no TFLite runtime.
  ``/opt/tflite-venv/bin/python3`` is a "ready board": a venv with numpy 1.26.4 + tflite-runtime 2.14.0
  (aarch64 wheels put in by ``pip install --target`` from the host; nothing is compiled).
- ``wheels/`` — those aarch64 wheels, for ``edgebench bootstrap --wheels`` tests.

aarch64 binaries run through the kernel's binfmt_misc + qemu-user (registered with the fix-binary flag,
so they also run inside a chroot that holds no qemu). :func:`ensure_binfmt` mounts and enables it.
The tree's owner and modes are those sshd's ``ChrootDirectory`` demands (root-owned, not group/other
writable, all the way up).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path("/var/cache/edgebench-test")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

#: Everything the cached tree depends on; its hash names the cache folder.
RECIPE = {
    "suite": "bookworm",
    "arch": "arm64",
    "variant": "minbase",
    "include": ["python3", "python3-venv"],
    "mirror": "http://deb.debian.org/debian",
    "python": "3.11",
    "platforms": ["manylinux_2_34_aarch64", "manylinux_2_17_aarch64"],  # tflite-runtime's, numpy's
    "wheels": ["tflite-runtime==2.14.0", "numpy==1.26.4"],
    "runtime_venv": "/opt/tflite-venv",
    "layout": 1,  # bump when the steps below change what ends up in the tree
}
DEBOOTSTRAP_TIMEOUT = 1800
PIP_TIMEOUT = 900


class RootfsError(RuntimeError):
    """The rootfs could not be built or is not there; the message names the cause and the fix."""


@dataclass(frozen=True)
class ArmRootfs:
    """A built, cached arm64 tree and what the tests need to know about it."""

    folder: Path

    @property
    def rootfs(self) -> Path:
        return self.folder / "rootfs"

    @property
    def wheels(self) -> Path:
        return self.folder / "wheels"

    @property
    def runtime_python(self) -> str:
        """The ready board's interpreter, as a path inside the rootfs."""
        return RECIPE["runtime_venv"] + "/bin/python3"

    @property
    def ready(self) -> bool:
        return (self.folder / "done.json").is_file()


def recipe_key() -> str:
    """The first 16 hex digits of the sha256 of :data:`RECIPE` (canonical JSON)."""
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("EDGEBENCH_ARM_CACHE") or DEFAULT_CACHE)


def cached() -> ArmRootfs:
    """The cache entry of the current recipe (built or not: see ``.ready``)."""
    return ArmRootfs(cache_root() / f"arm64-{recipe_key()}")


def _say(msg: str) -> None:
    print(f"[arm-rootfs] {msg}", flush=True)


def _run(cmd: list[str], timeout: float, **kwargs) -> None:
    _say("$ " + " ".join(cmd))
    try:
        subprocess.run(cmd, check=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)
    except FileNotFoundError as exc:
        raise RootfsError(f"{cmd[0]} is not installed; run scripts/system-deps.sh (apt-get install "
                          "qemu-user-static binfmt-support debootstrap)") from exc
    except subprocess.CalledProcessError as exc:
        raise RootfsError(f"{' '.join(cmd[:3])} ... failed with exit {exc.returncode} (output above)") from exc
    except subprocess.TimeoutExpired as exc:
        raise RootfsError(f"{' '.join(cmd[:3])} ... did not finish in {timeout:.0f} s") from exc


def binfmt_enabled() -> bool:
    """Whether aarch64 ELF binaries run here through qemu (binfmt_misc entry present and enabled)."""
    entry = BINFMT_DIR / "qemu-aarch64"
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except OSError:
        return False


def ensure_binfmt() -> None:
    """Make aarch64 binaries run transparently: mount binfmt_misc and enable Debian's qemu-aarch64
    entry when needed. Raises RootfsError when that is not possible (not root, qemu missing)."""
    if binfmt_enabled():
        return
    if os.geteuid() != 0:
        raise RootfsError("aarch64 binaries do not run here and enabling binfmt_misc needs root: run "
                          "`make arm-rootfs` as root")
    if not (BINFMT_DIR / "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], timeout=30)
    _run(["update-binfmts", "--enable", "qemu-aarch64"], timeout=60)
    if not binfmt_enabled():
        raise RootfsError("update-binfmts ran but qemu-aarch64 is still not enabled in "
                          f"{BINFMT_DIR}; is qemu-user-static installed?")


def ensure_rootfs() -> ArmRootfs:
    """Return the cached tree of the current recipe, building it first when it is missing.
    Concurrent callers wait for one another (a lock file). Raises RootfsError."""
    target = cached()
    if target.ready:
        ensure_binfmt()
        _say(f"cached: {target.folder} (recipe {recipe_key()})")
        return target
    if os.geteuid() != 0:
        raise RootfsError(f"{target.folder} is not built and building it needs root: run `make arm-rootfs` "
                          "as root")
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    with open(root / f".lock-{recipe_key()}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.ready:  # another process may have built it while we waited
            ensure_binfmt()
            _build(target)
        return target


def _build(target: ArmRootfs) -> None:
    started = time.monotonic()
    work = target.folder.with_name(target.folder.name + ".partial")
    rootfs, wheels = work / "rootfs", work / "wheels"
    _say(f"building {target.folder} from recipe {json.dumps(RECIPE, sort_keys=True)}")
    if (work / "debootstrap.done").is_file():  # an earlier build got past debootstrap: keep that (~2 min)
        _say(f"reusing the debootstrapped tree of an unfinished build in {work}")
        for later in (wheels, rootfs / RECIPE["runtime_venv"].lstrip("/")):
            shutil.rmtree(later, ignore_errors=True)
    else:
        if work.exists():
            _say(f"removing an unfinished build {work}")
            shutil.rmtree(work)
        work.mkdir(mode=0o755)
        _run(["debootstrap", f"--arch={RECIPE['arch']}", f"--variant={RECIPE['variant']}",
              "--include=" + ",".join(RECIPE["include"]), RECIPE["suite"], str(rootfs), RECIPE["mirror"]],
             timeout=DEBOOTSTRAP_TIMEOUT)
        (work / "debootstrap.done").write_text("")
    _say("checking that the rootfs's python3 is an aarch64 binary that runs here")
    probe = subprocess.run(["chroot", str(rootfs), "/usr/bin/python3", "-c",
                            "import platform, sys; print(platform.machine(), '%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=120, check=False)
    if probe.stdout.split() != ["aarch64", RECIPE["python"]]:
        raise RootfsError(f"the rootfs's python3 says {probe.stdout.strip()!r} {probe.stderr.strip()[-300:]!r}, "
                          f"expected 'aarch64 {RECIPE['python']}'")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    tags = ["--only-binary=:all:", "--python-version", RECIPE["python"], "--implementation", "cp"]
    for platform in RECIPE["platforms"]:
        tags += ["--platform", platform]
    _run(pip + ["download", "-d", str(wheels)] + tags + RECIPE["wheels"], timeout=PIP_TIMEOUT)
    venv = RECIPE["runtime_venv"]
    _run(["chroot", str(rootfs), "/usr/bin/python3", "-m", "venv", "--without-pip", venv], timeout=300)
    site = rootfs / venv.lstrip("/") / "lib" / f"python{RECIPE['python']}" / "site-packages"
    _run(pip + ["install", "--no-index", "--find-links", str(wheels), "--target", str(site)] + tags
         + RECIPE["wheels"], timeout=PIP_TIMEOUT)
    _say("checking that the ready board imports tflite_runtime under emulation")
    probe = subprocess.run(["chroot", str(rootfs), venv + "/bin/python3", "-c",
                            "import numpy, tflite_runtime; print(numpy.__version__, tflite_runtime.__version__)"],
                           capture_output=True, text=True, timeout=300, check=False)
    if probe.returncode != 0:
        raise RootfsError(f"the ready board cannot import its runtime: {probe.stderr.strip()[-500:]}")
    _say(f"ready board: numpy {probe.stdout.split()[0]}, tflite-runtime {probe.stdout.split()[-1]}")
    (work / "done.json").write_text(json.dumps({"recipe": RECIPE, "seconds": round(time.monotonic() - started, 1)},
                                               indent=1))
    os.rename(work, target.folder)
    _say(f"built {target.folder} in {time.monotonic() - started:.0f} s")


def main() -> int:
    try:
        ensure_rootfs()
    except RootfsError as exc:
        print(f"arm-rootfs: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
