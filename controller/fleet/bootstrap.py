"""Make a device ready: python3 checked, ``<workdir>/venv`` created, a TFLite runtime installed in it.

Online the venv's pip installs from the index the device can reach; offline (``--wheels DIR``) the
controller pushes the wheels of DIR that fit the device (its arch and python version; pure-python
wheels always) to ``<workdir>/wheels/`` (only the ones not there yet) and pip installs with
``--no-index --find-links``. tflite-runtime is installed with ``numpy<2`` (its builds need numpy 1.x).
Afterwards :func:`controller.fleet.inventory.resolve_python` picks the venv for the device unless its entry
sets ``python:`` explicitly.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.modelfile import sha256_of
from controller import defaults
from controller.errors import DeviceError, InputError
from controller.fleet.group import GroupResult, run_group
from controller.fleet.inventory import Device, resolve_python
from controller.fleet.session import DeviceSession

#: what pip installs for each runtime a device may ask for ("auto" installs the first)
RUNTIME_PACKAGES = {
    "ai-edge-litert": ["ai-edge-litert"],
    "tflite-runtime": ["tflite-runtime", "numpy<2"],
    "tensorflow": ["tensorflow"],
}
_WHEEL = re.compile(r"^(?P<dist>[^-]+)-(?P<ver>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")

# Runs on the device with its system python: the facts bootstrap needs, as JSON.
_PROBE = ("import json, platform, sys, importlib.util as u; print(json.dumps({'version': list(sys.version_info[:2]), "
          "'machine': platform.machine(), 'venv': bool(u.find_spec('venv')), "
          "'ensurepip': bool(u.find_spec('ensurepip'))}))")


@dataclass
class BootstrapOptions:
    wheels: str | None = None  #: local folder of wheels to install from (offline); None = pip online
    runtime: str | None = None  #: override the device's runtime key
    daemon: bool = False  #: also install the agent daemon as a systemd user service (controller.fleet.daemon_unit)


@dataclass
class BootstrapReport:
    """What bootstrap did on one device, step by step."""

    device: str
    ok: bool = False
    steps: list[str] = field(default_factory=list)
    python: str | None = None  #: the venv's interpreter the device will use
    runtime: str | None = None
    runtime_version: str | None = None
    bytes_pushed: int = 0
    reason: str | None = None
    kind: str | None = None
    #: with --daemon: {"unit_path", "unit", "installed", "reason"} (controller.fleet.daemon_unit.install)
    daemon_unit: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def wheel_fits(filename: str, machine: str, version: tuple[int, int]) -> bool:
    """Whether the wheel ``filename`` installs on a Linux device with ``machine`` (``uname -m``) and
    CPython ``version``: pure wheels always; binary ones for that arch and that (or an abi3-older)
    python."""
    match = _WHEEL.match(filename)
    if not match:
        return False
    plats = match["plat"].split(".")
    if plats != ["any"]:
        arch = {"arm64": "aarch64", "armv7": "armv7l"}.get(machine, machine)
        if not any(p.startswith(("linux", "manylinux", "musllinux")) and p.endswith("_" + arch) for p in plats):
            return False
    cp = f"cp{version[0]}{version[1]}"
    for tag in match["py"].split("."):
        if tag in ("py3", f"py{version[0]}{version[1]}") or tag == cp:
            return True
        if match["abi"] == "abi3" and tag.startswith("cp3") and int(tag[3:] or 0) <= version[1]:
            return True
    return False


def bootstrap_device(device: Device, agent_pyz: str, options: BootstrapOptions) -> BootstrapReport:
    """Bootstrap one device and return its report. Raises DeviceError (with the report as ``.value``)
    when the device cannot be made ready."""
    report = BootstrapReport(device.name)
    session = DeviceSession(device, agent_pyz)
    try:
        _bootstrap(session, options, report)
        report.ok = True
    except DeviceError as exc:
        report.reason, report.kind = exc.reason, exc.kind
        exc.value = report
        raise
    finally:
        report.bytes_pushed = session.status.bytes_pushed
        session.close()
    return report


def bootstrap_devices(devices: Sequence[Device], agent_pyz: str, options: BootstrapOptions) -> GroupResult:
    """Bootstrap every device in parallel (:func:`controller.fleet.group.run_group`); each outcome's
    value is the device's :class:`BootstrapReport` (also when it failed, or one made from the failure).
    Raises InputError before contacting any device when ``options.wheels`` is not a folder."""
    if options.wheels and not os.path.isdir(options.wheels):
        raise InputError(f"--wheels {options.wheels}: no such folder; fill it with `pip download -d "
                         f"{options.wheels} ai-edge-litert` (for the devices' platform)")
    group = run_group(devices, lambda d: bootstrap_device(d, agent_pyz, options), label="bootstrap")
    for name, outcome in group.outcomes.items():
        if outcome.value is None:  # no report: interrupted, or a bug recorded by the group runner
            outcome.value = BootstrapReport(name, reason=outcome.reason, kind=outcome.kind)
    return group


def _bootstrap(session: DeviceSession, options: BootstrapOptions, report: BootstrapReport) -> None:
    device = session.device
    session.open(subdirs=("wheels",))
    t = session.t
    venv_python = session.venv_python()
    session.python = resolve_python(device)  # the device's own python makes the venv, not an earlier venv
    probe = session.run_python(["-c", _PROBE])
    if not probe.ok:
        raise DeviceError(device.name, f"{session.python} does not run: {probe.stderr.strip()[-300:]}",
                          kind="python")
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    version = tuple(facts["version"])
    report.steps.append(f"python {version[0]}.{version[1]} ({session.python}) on {facts['machine']}")
    if version < (3, 9):
        raise DeviceError(device.name, f"python {version[0]}.{version[1]} is too old; edgebench needs 3.9+",
                          kind="python")
    if t.exists(venv_python):
        report.steps.append(f"venv {posixpath.dirname(posixpath.dirname(venv_python))} already there")
    else:
        if not facts["venv"] or not facts["ensurepip"]:
            raise DeviceError(device.name, "python has no venv/ensurepip module; install it (Debian/Ubuntu: "
                              "apt-get install python3-venv) and run bootstrap again", kind="python")
        venv_dir = posixpath.dirname(posixpath.dirname(venv_python))
        made = session.run_python(["-m", "venv", venv_dir], timeout=300)
        if not made.ok:
            raise DeviceError(device.name, f"creating {venv_dir} failed: {made.stderr.strip()[-500:]}",
                              kind="venv")
        report.steps.append(f"created venv {venv_dir}")
    runtime = options.runtime or device.runtime
    if runtime == "auto":
        runtime = "ai-edge-litert"
    packages = RUNTIME_PACKAGES[runtime]
    pip = [venv_python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if options.wheels:
        remote_dir = posixpath.join(session.workdir, "wheels")
        pushed = _push_wheels(session, options.wheels, remote_dir, facts["machine"], version)
        report.steps.append(f"pushed {len(pushed)} wheel(s) to {remote_dir}")
        pip += ["--no-index", "--find-links", remote_dir]
    result = t.run(pip + packages, timeout=defaults.PIP_TIMEOUT)
    if not result.ok:
        where = "the pushed wheels" if options.wheels else "the package index"
        raise DeviceError(device.name, f"pip could not install {' '.join(packages)} from {where}: "
                          f"{result.stderr.strip()[-800:]}", kind="pip")
    report.steps.append(f"installed {' '.join(packages)}")
    # From now on the device runs the agent with the venv (unless its entry names a python).
    session.resolve_python()
    session.ensure_agent()
    info = session.info()
    found = [r for r in info.get("runtimes") or [] if r.get("name") == runtime and r.get("ok")]
    if not found:
        raise DeviceError(device.name, f"{runtime} was installed but the agent cannot import it with "
                          f"{session.python}", kind="runtime")
    report.python = session.python
    report.runtime, report.runtime_version = runtime, found[0].get("version")
    report.steps.append(f"agent uses {session.python}: {runtime} {report.runtime_version}")
    if options.daemon:
        _install_daemon(session, report)


def _install_daemon(session: DeviceSession, report: BootstrapReport) -> None:
    """The systemd user unit of the agent daemon; where systemd cannot be used, the daemon is started
    now with ``daemon --detach`` (it then does not survive a reboot) and the report carries the unit."""
    from controller.fleet import daemon_unit

    report.daemon_unit = unit = daemon_unit.install(session)
    if unit["installed"]:
        report.steps.append(f"agent daemon: systemd user unit {unit['unit_path']} enabled and started (for a "
                            "start at boot without a login: `loginctl enable-linger` once on the device)")
        return
    started = session.run_python([session.agent, "daemon", "--detach", "--workdir", session.workdir])
    if not started.ok:
        raise DeviceError(session.device.name, f"the agent daemon did not start: {started.stderr.strip()[-500:]}",
                          kind="agent")
    report.steps.append(f"agent daemon: systemd cannot be used here ({unit['reason']}); unit written to "
                        f"{unit['unit_path']} (install it by hand); daemon started for now with --detach")


def _push_wheels(session: DeviceSession, folder: str, remote_dir: str, machine: str,
                 version: tuple) -> list[str]:
    """Push the wheels of ``folder`` that fit the device and are not there yet; return their names."""
    names = sorted(n for n in os.listdir(folder) if wheel_fits(n, machine, version))
    if not names:
        raise DeviceError(session.device.name, f"no wheel in {folder} fits {machine} / python "
                          f"{version[0]}.{version[1]}; download them with pip download --platform ...",
                          kind="wheels")
    missing = [n for n in names if not session.t.exists(posixpath.join(remote_dir, n))]
    # The same path as models and the agent: temp name, sha256 verified on the device, then renamed.
    if missing:
        session.push_verified([(os.path.join(folder, n), sha256_of(os.path.join(folder, n)),
                                posixpath.join(remote_dir, n)) for n in missing])
    return missing
