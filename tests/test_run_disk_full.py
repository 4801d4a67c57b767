"""A device whose disk fills up in the middle of ``edgebench run`` (issue 11, defect 2, controller side):
the device fails with kind ``disk_full``, the free space and the fix; the jobs measured before are kept
(the one whose document the device could not write arrives inline); the rest are ``not_run``; no temp
file is left in the device's results folder. A real 2 MiB tmpfs workdir, filled by dd once the device
has written its first result."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from controller.errors import ExitCode
from tests.fixtures_fleet import DEVICE_PYTHON, write_inventory
from tests.test_agent_disk_full import fill, small_disk  # noqa: F401  (fixture)
from tests.test_run import run_json


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_keeps_the_finished_jobs(test_models, tmp_path, small_disk):  # noqa: F811
    workdir = small_disk / "edgebench"
    inventory = write_inventory(tmp_path / "devices.yaml", [
        {"name": "board", "transport": "local", "workdir": str(workdir), "python": DEVICE_PYTHON}])
    out = tmp_path / "out"
    stop = threading.Event()

    def fill_after_first_result() -> None:
        end = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < end:
            if list(workdir.glob("runs/*/results/*.json")):  # the device wrote its first result
                fill(small_disk)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=fill_after_first_result, daemon=True)
    watcher.start()
    try:
        code, doc = run_json(str(test_models["float32"]), "--devices", str(inventory), "--out", str(out),
                             "--threads", "1,2,3", "--runs", "3", "--min-seconds", "0.1", "--warmup-min-seconds", "0",
                             "--no-eval", "--no-sync-start")
    finally:
        stop.set()
        watcher.join(10)
    assert code == ExitCode.PARTIAL
    board = doc["devices"]["board"]
    assert board["state"] == "failed" and board["kind"] == "disk_full", board
    assert "disk is full" in board["reason"] and "KiB free" in board["reason"] and "free space" in board["reason"]
    rows = {r["job_id"]: r for r in doc["results"]}
    statuses = sorted(r["status"] for r in rows.values())
    assert statuses == ["not_run", "ok", "ok"], (board["reason"], [(r["job_id"], r["status"]) for r in rows.values()])
    results_dir = next(workdir.glob("runs/*/results"))
    assert all(not p.name.startswith(".") for p in results_dir.iterdir())  # no zero-byte temp file left
    subprocess.run(["rm", "-f", str(small_disk / "filler")], check=True, timeout=30)
