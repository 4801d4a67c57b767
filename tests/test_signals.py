"""The controller interrupted at each step of a run (issue 11, defect 9 and the signal matrix):
SIGINT, SIGTERM and SIGKILL x connect, push, measure, fetch, write. After each: the run folder is readable
(after SIGKILL through ``edgebench run --resume``, the next command on the device), the exit code is the
documented one, the device lock is free, and no temp file is left on the device.

The controller runs as a subprocess against a local-transport device (the same agent batch, device lock
and store as over SSH; SSH uploads are covered by test_interrupt_upload.py). It touches a marker file when
it enters each step (test hook EDGEBENCH_TEST_PHASE_DIR) and, for the short steps, waits there
(EDGEBENCH_TEST_HOLD) so the signal lands inside that step. The measure step needs no hold: the job
measures for 20 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.lock import DeviceLock
from controller.errors import ExitCode, InputError
from controller.fleet.store import load_results
from tests.fixtures_fleet import DEVICE_PYTHON, write_inventory

REPO = Path(__file__).resolve().parent.parent
PHASES = {"connect": "connect", "push": "stage", "measure": "batch", "fetch": "fetch", "write": "write"}
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


def run_folder(out: Path) -> Path:
    """The run folder under ``out`` (the history store's ``.history`` lives there too)."""
    return next(p for p in sorted(out.iterdir()) if not p.name.startswith("."))


def controller(argv: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "controller", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))


def leftovers(workdir: Path) -> list[str]:
    """Temp files on the device: upload parts, atomic-write temps, fetch temps."""
    return sorted(str(p) for p in workdir.rglob("*") if ".part-" in p.name or p.name.endswith(".tmp")
                  or (p.name.startswith(".") and p.is_file()))


@pytest.mark.slow
@pytest.mark.parametrize("phase", list(PHASES))
@pytest.mark.parametrize("signame", list(SIGNALS))
def test_a_signal_at_each_step_leaves_a_readable_run_and_a_free_device(test_models, tmp_path, phase, signame):
    workdir = tmp_path / "device"
    inventory = write_inventory(tmp_path / "devices.yaml", [
        {"name": "board", "transport": "local", "workdir": str(workdir), "python": DEVICE_PYTHON,
         "command_timeout": 30}])
    markers = tmp_path / "markers"
    markers.mkdir()
    seconds = "20" if phase == "measure" else "0"
    argv = ["run", str(test_models["float32"]), "--devices", str(inventory), "--out", str(tmp_path / "out"),
            "--runs", "1", "--warmup", "0", "--min-seconds", seconds, "--warmup-min-seconds", "0", "--no-eval",
            "--json"]
    env = {"EDGEBENCH_TEST_PHASE_DIR": str(markers)}
    if phase != "measure":
        env["EDGEBENCH_TEST_HOLD"] = PHASES[phase]
    proc = controller(argv, env)
    try:
        end = time.monotonic() + 120
        while not (markers / PHASES[phase]).exists():
            assert time.monotonic() < end and proc.poll() is None, proc.communicate(timeout=10)
            time.sleep(0.02)
        if phase == "measure":
            time.sleep(2.0)  # the worker is measuring by now
        proc.send_signal(SIGNALS[signame])
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    err = err.decode()
    run_dir = run_folder(tmp_path / "out")
    info = json.loads((run_dir / "run.json").read_text())  # readable whatever happened
    if signame == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
        if not (run_dir / "results.parquet").exists():
            with pytest.raises(InputError, match="unfinished run.*--resume"):
                load_results(str(run_dir))
        with DeviceLock(str(workdir / "lock"), timeout=30):  # the orphaned batch unwinds (its stdin closed)
            pass
        resumed = controller(["run", "--resume", str(run_dir), "--devices", str(inventory), "--json"])
        out, rerr = resumed.communicate(timeout=120)
        assert resumed.returncode in (ExitCode.OK, ExitCode.PARTIAL), rerr.decode()
        info = json.loads((run_dir / "run.json").read_text())
        assert info["state"] == "finished" and info["resumed"]
        rows = json.loads(out)["results"]
        assert len(rows) == 1 and rows[0]["job_id"].startswith("000-")  # one row per planned job, none lost
        if phase in ("fetch", "write"):
            assert rows[0]["status"] == "ok"  # measured before the kill: fetched by --resume
    else:
        assert proc.returncode == ExitCode.INTERRUPTED, err
        assert "Traceback" not in err and "internal error" not in err, err
        assert info["state"] == "interrupted" and info["interrupted"] is True
        device = info["devices"]["board"]
        if phase != "write":
            assert device["kind"] == "interrupted" and "failed (exit" not in (device["reason"] or ""), device
        assert len(load_results(str(run_dir))) == 1
    with DeviceLock(str(workdir / "lock"), timeout=30):  # no lock held
        pass
    # Nothing left on the device: cleaned by the interrupted run itself, or (SIGKILL) by the next command
    # on the device, --resume (which sweeps stale upload parts like every run).
    assert leftovers(workdir) == []
