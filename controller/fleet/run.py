"""A run over the fleet: every selected device, in parallel, each through the same steps.

Per device (one connection, reused): connect → make sure the agent zipapp of this version is there
(pushed and sha256-verified only if absent) → ``agent info`` (runtime, disk, environment; once per run)
→ compatibility preflight per model (``controller.model.compat.check``; a model the device's runtime cannot
load is skipped with the reason) → push each model to ``<workdir>/models/<sha256>.tflite`` only if
absent, verifying its sha256 on the device before it gets its final name → one ``agent batch`` that runs
the jobs one at a time under the device lock (``flock``; a second controller waits up to the lock
timeout, then the device is reported busy) → each result document is fetched as soon as the agent
reports it done (so Ctrl-C keeps it) → outputs (``--eval``) → accuracy vs that device's fp32.

Devices run in parallel threads (at most ``parallel`` at once); a device that fails is recorded with its
reason (unreachable, auth refused, host key, python missing, disk full, busy) while the others finish.
Nothing is timed across SSH: the numbers come from the device.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from controller.errors import DeviceError, ExitCode
from controller.fleet.device_run import DeviceRun, StartGate
from controller.fleet.group import GroupResult, run_group
from controller.fleet.inventory import Device
from controller.fleet.models import ModelRef
from controller.fleet.options import RunOptions
from controller.fleet.part_files import remove_own
from controller.fleet.session import DeviceStatus
from controller.fleet.step_hooks import enter_step
from controller.fleet.store import RunStore, now_iso, run_info

TABLES_EVERY_SECONDS = 5.0
__all__ = ["FleetResult", "RunOptions", "execute", "run_fleet"]


@dataclass
class FleetResult:
    """Per-device outcome of a run: each device's status, the group's outcomes, the results table."""

    run_dir: str
    devices: dict[str, DeviceStatus] = field(default_factory=dict)
    group: GroupResult = field(default_factory=GroupResult)
    results: Any = None  #: the results DataFrame as written at the end

    @property
    def interrupted(self) -> bool:
        return self.group.interrupted

    @property
    def failed(self) -> dict[str, DeviceStatus]:
        return {n: s for n, s in self.devices.items() if s.failed}

    @property
    def drifted(self) -> list[str]:
        """``device/job`` of every job flagged as drifted from fp32."""
        frame = self.results
        if frame is None or "drift" not in frame or not len(frame):
            return []
        hits = frame[frame["drift"].fillna(False).astype(bool)]
        return [f"{d}/{j}" for d, j in zip(hits["device"], hits["job_id"])]

    def exit_code(self) -> ExitCode:
        """The group rule (:meth:`controller.fleet.group.GroupResult.exit_code`: INTERRUPTED,
        NO_DEVICE, PARTIAL when a device or a job failed or was skipped); then DRIFT when a variant is
        flagged as drifted from fp32; OK otherwise."""
        jobs_failed = any(s.jobs_failed or s.jobs_skipped for s in self.devices.values())
        code = self.group.exit_code(jobs_failed=jobs_failed)
        if code == ExitCode.OK and self.drifted:
            return ExitCode.DRIFT
        return code


def run_fleet(devices: Sequence[Device], models: list[ModelRef], options: RunOptions, store: RunStore,
              notify: Callable[[DeviceStatus], None] | None = None) -> FleetResult:
    """Run ``models`` on ``devices`` (at most ``options.parallel`` at once, through
    :func:`controller.fleet.group.run_group`) and save into ``store``.

    Every device is tried; each ends ``done`` or ``failed`` with its reason. Accuracy is scored on each
    device as soon as its outputs are home. Tables are rewritten at most every few seconds while devices
    still work, and always at the end (also after Ctrl-C: the result is then marked interrupted).
    Never raises for a device problem.
    """
    notify = notify or (lambda status: None)
    result = FleetResult(run_dir=store.root)
    runs = {d.name: DeviceRun(d, models, options, store, notify) for d in devices}
    if options.sync_start and len(runs) > 1 and options.parallel >= len(runs):
        start_gate = StartGate(len(runs), options.sync_start_timeout)
        for r in runs.values():
            r.gate = start_gate
    for r in runs.values():
        result.devices[r.device.name] = r.status
        notify(dataclasses.replace(r.status))
    last_write = [time.monotonic()]

    def work(device: Device) -> DeviceStatus:
        status = runs[device.name].run()
        # The documents are on disk already; the tables are rebuilt from them at most every few
        # seconds while devices still measure (and always at the end or on Ctrl-C).
        if time.monotonic() - last_write[0] > TABLES_EVERY_SECONDS:
            last_write[0] = time.monotonic()
            store.write_tables()
        if status.failed:
            error = DeviceError(device.name, status.reason or "failed", kind=status.kind or "device")
            error.value = status
            raise error
        return status

    def stop_all() -> None:  # Ctrl-C: local commands killed, SSH links closed
        for device_run in runs.values():
            device_run.stop()  # sets stopping first: a daemon device must not reconnect now

    result.group = run_group(devices, work, parallel=options.parallel, on_interrupt=stop_all)
    enter_step("write")
    if result.interrupted:
        store.save_run_info(interrupted=True)
        for device_run in runs.values():
            device_run.finish_interrupted()
            # interrupted uploads: removed now where the device answers (else the next run sweeps them)
            if device_run.parts_in_flight and remove_own(device_run.device, device_run.parts_in_flight):
                device_run.parts_in_flight.clear()
    result.results = store.write_tables()
    return result


def execute(devices: Sequence[Device], models: list[ModelRef], options: RunOptions, inventory_path: str,
            notify: Callable[[DeviceStatus], None] | None = None, **info: Any) -> tuple[RunStore, FleetResult]:
    """A whole ``edgebench run``: create the run folder under ``options.out_dir`` (``info``: more run.json
    keys, e.g. ``kind="nightly"``), run the fleet, and record in run.json when it finished and with which
    exit code. Raises InputError when the run folder cannot be created."""
    from controller import __version__

    store = RunStore.create(options.out_dir, {**run_info(options, inventory_path, devices, models, __version__),
                                              **info})
    try:
        result = run_fleet(devices, models, options, store, notify)
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM outside the device group (e.g. while writing the tables)
        store.save_run_info(finished=now_iso(), interrupted=True, state="interrupted",
                            exit_code=int(ExitCode.INTERRUPTED))
        store.write_tables()
        raise
    except BaseException:
        store.save_run_info(finished=now_iso(), state="failed")
        raise
    code = int(result.exit_code())
    store.save_run_info(finished=now_iso(), exit_code=code,
                        state="interrupted" if result.interrupted else "finished")
    return store, result
