"""The device's disk fills up in the middle of a batch (issue 11, defect 2, agent side): exit 5 with the
free space and the fix, the documents already written kept, the one just measured sent inline in its
``done`` event, no zero-byte temp file left. A real 2 MiB tmpfs filled by dd after the first result."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.errors import ExitCode

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs, unmounted at teardown."""
    mount = tmp_path / "small disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True, timeout=30)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True, timeout=30)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte (dd stops at ENOSPC)."""
    subprocess.run(["dd", "if=/dev/zero", f"of={folder / 'filler'}", "bs=64k"], capture_output=True,
                   timeout=60, check=False)


def test_a_disk_that_fills_after_the_first_result_keeps_what_was_measured(test_models, tmp_path, small_disk):
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"model": str(test_models["float32"]), "id": f"j{i}", "runs": 3,
                                 "min_seconds": 0.01, "warmup_min_seconds": 0} for i in range(3)]))
    out = small_disk / "results"
    proc = subprocess.Popen([sys.executable, "-m", "agent", "batch", str(jobs), "--out", str(out),
                             "--cooldown", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    events, buffer, filled = [], b"", False
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None or select.select([proc.stdout], [], [], 0)[0]:
            assert time.monotonic() < deadline, f"batch still running; events: {events}"
            if not select.select([proc.stdout], [], [], 1.0)[0]:
                continue
            data = os.read(proc.stdout.fileno(), 1 << 20)
            if not data:
                break
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                events.append(json.loads(line))
                if events[-1]["event"] == "done" and not filled:
                    fill(small_disk)  # during the cooldown before j1
                    filled = True
        code = proc.wait(timeout=60)
        stderr = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert code == ExitCode.DISK_FULL, stderr
    assert "Traceback" not in stderr and "disk is full" in stderr and "KiB free" in stderr
    dones = [e for e in events if e["event"] == "done"]
    assert [d["id"] for d in dones] == ["j0", "j1"]
    assert json.loads((out / "j0.json").read_text())["status"] == "ok"  # the finished result kept
    assert dones[1]["file"] is None and dones[1]["document"]["status"] == "ok"  # measured, sent inline
    assert dones[1]["document"]["timing"]["count"] >= 3
    full = [e for e in events if e["event"] == "disk_full"]
    assert len(full) == 1 and full[0]["id"] == "j1" and full[0]["free_kb"] == 0
    assert "free space on the device" in full[0]["message"]
    assert sorted(p.name for p in out.iterdir()) == ["j0.json"]  # no zero-byte temp file left behind
