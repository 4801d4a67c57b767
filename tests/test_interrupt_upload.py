"""Ctrl-C / SIGTERM / SIGKILL during a model upload over real SSH (issue 11, defect 1): exit 130 without
an EOFError or an 'internal error', the partial upload (``.part-<token>``) removed by the interrupted run
where it can be, and by the next run always (after SIGKILL)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.errors import ExitCode
from controller.fleet.part_files import STALE_FACTOR
from tests.fixtures_fleet import write_inventory

REPO = Path(__file__).resolve().parent.parent
COMMAND_TIMEOUT = 4  #: the device's command_timeout: part files older than STALE_FACTOR x this are stale
QUICK = ["--runs", "1", "--warmup", "0", "--min-seconds", "0", "--warmup-min-seconds", "0", "--no-eval"]


@pytest.fixture
def big_model(test_models, tmp_path) -> Path:
    """A valid model padded to 400 MiB (sparse here): its upload takes seconds over loopback SSH."""
    path = tmp_path / "big.tflite"
    shutil.copyfile(test_models["float32"], path)
    os.truncate(path, 400 * 2**20)
    return path


def run_folder(out: Path) -> Path:
    """The run folder under ``out`` (the history store's ``.history`` lives there too)."""
    return next(p for p in sorted(out.iterdir()) if not p.name.startswith("."))


def start_run(model: Path, inventory: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "controller", "run", str(model), "--devices", str(inventory),
                             "--out", str(out), *QUICK, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))


def parts(workdir: Path) -> list[Path]:
    return sorted(p for sub in ("models", "agent", "data") for p in (workdir / sub).glob("*.part-*"))


def wait_for_part(proc: subprocess.Popen, workdir: Path, deadline_s: float = 120) -> Path:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        found = [p for p in parts(workdir) if p.name.startswith(tuple("0123456789abcdef")) and "tflite" in p.name]
        if found and found[0].stat().st_size > 0:
            return found[0]
        assert proc.poll() is None, f"the run ended before uploading: {proc.communicate()}"
        time.sleep(0.05)
    raise AssertionError("no model upload started")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_upload_exits_130_cleanly_and_leaves_no_part_file(ssh_fleet, big_model, tmp_path, sig):
    workdir = tmp_path / "work"
    inventory = write_inventory(tmp_path / "devices.yaml", [
        dict(ssh_fleet.entries[0], workdir=str(workdir), command_timeout=COMMAND_TIMEOUT)])
    proc = start_run(big_model, inventory, tmp_path / "out")
    try:
        wait_for_part(proc, workdir)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    err = err.decode()
    assert proc.returncode == ExitCode.INTERRUPTED, err
    for bad in ("Traceback", "EOFError", "internal error"):
        assert bad not in err, err
    assert parts(workdir) == []  # removed by the interrupted run itself
    run_dir = run_folder(tmp_path / "out")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["interrupted"] is True and info["devices"][ssh_fleet.servers[0].name]["kind"] == "interrupted"
    assert (run_dir / "results.parquet").is_file()


@pytest.mark.slow
def test_a_part_file_left_by_a_killed_controller_is_swept_by_the_next_run(ssh_fleet, big_model, test_models,
                                                                        tmp_path):
    workdir = tmp_path / "work"
    inventory = write_inventory(tmp_path / "devices.yaml", [
        dict(ssh_fleet.entries[0], workdir=str(workdir), command_timeout=COMMAND_TIMEOUT)])
    proc = start_run(big_model, inventory, tmp_path / "out")
    try:
        left = wait_for_part(proc, workdir)
        proc.kill()  # SIGKILL: no chance to clean up
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    # The killed upload's part file goes when the device's stage script sees its stdin end (the link
    # dropped); a part file whose writer could not clean up (power cut) is swept by the next probe.
    stale = workdir / "models" / "dead.tflite.part-deadbeef"
    stale.write_bytes(b"half an upload")
    past = time.time() - (STALE_FACTOR * COMMAND_TIMEOUT + 5)
    os.utime(stale, (past, past))
    fresh = workdir / "models" / "other.tflite.part-livetoken"  # a live upload of another controller
    fresh.write_bytes(b"still arriving")
    second = start_run(test_models["float32"], inventory, tmp_path / "out2")
    _, err = second.communicate(timeout=300)
    assert second.returncode == ExitCode.OK, err.decode()
    assert not stale.exists()  # swept: older than STALE_FACTOR x command_timeout
    assert not left.exists()  # the killed run's own part file is gone too
    assert fresh.exists()  # not touched: too fresh to be a dead upload
