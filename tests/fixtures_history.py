"""Real run folders for the history and report tests, and a way to grow a history from them.

``history_runs``: three real ``edgebench run`` of the demo family (4 variants, 1 thread, eval set) on
this machine as a bare device (numpy + ai-edge-litert venv, its own workdir), plus a corrupt model
that the preflight skips (a real not-ok row), all in one reports folder.

:func:`clone_run` copies a real run folder under a new id and time, optionally scaling its latencies
or changing its device fingerprint: a long history made of real rows, without measuring it again.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.fixtures_fleet import DEVICE_PYTHON, write_inventory

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "models" / "demo"
FAST = ["--runs", "5", "--warmup", "1", "--min-seconds", "0", "--warmup-min-seconds", "0"]


@dataclass
class HistoryRuns:
    out: Path  #: the reports folder
    runs: list[Path]  #: run folders, oldest first
    devices: Path  #: the devices.yaml used


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``edgebench ARGV`` in this process; (exit code, stdout, stderr)."""
    from controller.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def local_devices(folder: Path) -> Path:
    """devices.yaml: this machine as a bare device with its own workdir under ``folder``."""
    return write_inventory(folder / "devices.yaml", [{"name": "local", "transport": "local",
                                                     "python": DEVICE_PYTHON, "workdir": str(folder / "work")}])


@pytest.fixture(scope="session")
def history_runs(tmp_path_factory, test_models) -> HistoryRuns:
    root = tmp_path_factory.mktemp("history")
    devices = local_devices(root)
    out = root / "reports"
    runs = []
    for _ in range(3):
        code, stdout, stderr = run_cli("run", str(DEMO), str(test_models["bad_custom_op"]), "--devices",
                                       str(devices), "--out", str(out), "--json", *FAST)
        assert code == 1, stderr  # the corrupt model is skipped: partial
        runs.append(Path(json.loads(stdout)["run_dir"]))
    return HistoryRuns(out, runs, devices)


def clone_run(src: Path, out: Path, created: datetime.datetime, *, scale: float = 1.0,
              fingerprint: str | None = None, kind: str | None = None) -> Path:
    """Copy run folder ``src`` into ``out`` as a new run made at ``created``: latencies multiplied by
    ``scale``, the device fingerprint replaced when given. Returns the new folder."""
    run_id = created.strftime("%Y%m%dT%H%M%SZ") + "-" + f"{abs(hash((src.name, created, scale))) % 16**6:06x}"
    dest = out / run_id
    shutil.copytree(src, dest)
    info = json.loads((dest / "run.json").read_text())
    info.update(run_id=run_id, created=created.isoformat(timespec="seconds"))
    if kind:
        info["kind"] = kind
    (dest / "run.json").write_text(json.dumps(info))
    frame = pd.read_parquet(dest / "results.parquet")
    frame["run_id"] = run_id
    for column in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms"):
        frame[column] = frame[column] * scale
    if fingerprint:
        frame["device_fingerprint"] = frame["device_fingerprint"].where(frame["device_fingerprint"].isna(),
                                                                        fingerprint)
    frame.to_parquet(dest / "results.parquet", index=False)
    return dest


def run_writers(argvs: list[list[str]], env: dict, cwd: Path, timeout: float = 300) -> None:
    """Start one process per argv at once (concurrent index writers), wait for each (bounded by
    ``timeout``; communicate, so a chatty stderr never fills the pipe and stalls a writer) and assert each
    exited 0; a failed or stuck writer is stopped, with the others this call started, by its Popen."""
    import subprocess

    procs = [subprocess.Popen(argv, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True) for argv in argvs]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
