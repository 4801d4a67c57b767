"""``devices --check``: contact each device (push the agent if absent, run ``agent info``) and report
its facts or the reason it cannot be used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controller.fleet.agent_build import agent_zipapp
from controller.fleet.daemon import heartbeat
from controller.fleet.group import GroupResult, run_group
from controller.fleet.inventory import Device
from controller.fleet.session import DeviceSession


def check_device(device: Device, agent_pyz: str) -> dict[str, Any]:
    """The facts of one reachable device. Raises DeviceError with the reason it cannot be used."""
    session = DeviceSession(device, agent_pyz)
    try:
        session.open()
        session.ensure_agent()
        info = session.info()
        daemon = heartbeat(session) if device.daemon else None
    finally:
        session.close()
    env = info.get("env") or {}
    return {
        "reachable": True, "host_key": session.status.host_key, "python_executable": session.python,
        "python": env.get("python"), "arch": env.get("arch"), "cpu_model": env.get("cpu_model"),
        "cpu_count": env.get("cpu_count"), "mem_total_kb": env.get("mem_total_kb"),
        "temp_c": env.get("temp_c", env.get("temp_c_before")), "disk_free_kb": info.get("disk_free_kb"),
        "agent_version": info.get("agent_version"), "runtimes": info.get("runtimes") or [],
        "bytes_pushed": session.status.bytes_pushed,
        "daemon": daemon,  #: daemon devices: its heartbeat (controller.fleet.daemon.heartbeat), else None
    }


def check_devices(devices: Sequence[Device], deadline: float) -> GroupResult:
    """Check every device in parallel within ``deadline`` seconds (:func:`run_group`); each outcome's
    value is :func:`check_device`'s facts, or the failure's reason and kind."""
    pyz = agent_zipapp()
    return run_group(devices, lambda d: check_device(d, pyz), parallel=max(1, len(devices)), deadline=deadline,
                     label="check")
