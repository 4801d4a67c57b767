"""Model and input paths that are not readable regular files, and models whose names are not UTF-8: the
agent says what the path is (a clear document or usage error), never a traceback, never a hang, and in a
batch the later jobs still run (issue 11, defects 3 and 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import ExitCode
from agent.regular_file import NotRegularFile, open_regular

REPO = Path(__file__).resolve().parent.parent
QUICK = ["--runs", "1", "--min-seconds", "0", "--warmup-min-seconds", "0"]
# Root reads any file (CAP_DAC_OVERRIDE): drop the capability so a chmod 000 file is really unreadable.
DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def bad_paths(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (path, expected error kind, words the message must hold)."""
    fifo = tmp_path / "pipe.tflite"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.tflite"
    folder.mkdir()
    loop = tmp_path / "loop.tflite"
    loop.symlink_to(loop)
    noread = tmp_path / "noread.tflite"
    noread.write_bytes(good.read_bytes())
    noread.chmod(0)
    return {
        "fifo": (fifo, "not_a_model", "is a FIFO (named pipe), not a regular file"),
        "directory": (folder, "not_a_model", "is a directory"),
        "symlink_loop": (loop, "missing_model", "is a symlink loop"),
        "dev_zero": (Path("/dev/zero"), "not_a_model", "is a character device"),
        "unreadable": (noread, "missing_model", "is not readable (permission denied)"),
        "missing": (tmp_path / "gone.tflite", "missing_model", "does not exist"),
    }


def agent(*args, prefix=(), timeout=120):
    return subprocess.run([*prefix, sys.executable, "-m", "agent", *map(str, args)], capture_output=True,
                          text=True, check=False, timeout=timeout, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def corrupt_name(model: Path, name: bytes, dest: Path) -> Path:
    """``model`` with one byte of the tensor name ``name`` replaced by 0xff (invalid UTF-8)."""
    data = bytearray(model.read_bytes())
    at = data.find(name)
    assert at > 0, f"{name!r} not in {model}"
    data[at + 1] = 0xFF
    dest.write_bytes(bytes(data))
    return dest


def test_the_capability_drop_makes_a_chmod_000_file_unreadable(tmp_path):
    """The premise of the 'unreadable' cases below (root reads anything otherwise)."""
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    assert subprocess.run([*DROP_DAC, "cat", str(secret)], capture_output=True, check=False).returncode != 0


@pytest.mark.parametrize("case", ["fifo", "directory", "symlink_loop", "dev_zero", "unreadable", "missing"])
def test_open_regular_names_what_the_path_is_at_once(tmp_path, test_models, case):
    path, _, words = bad_paths(tmp_path, test_models["float32"])[case]
    if case == "unreadable" and DROP_DAC:
        code = "import sys; from agent.regular_file import open_regular; open_regular(sys.argv[1])"
        proc = subprocess.run([*DROP_DAC, sys.executable, "-c", code, str(path)], capture_output=True,
                              text=True, timeout=60, cwd=REPO, check=False)
        assert words in proc.stderr
        return
    with pytest.raises(NotRegularFile) as err:
        open_regular(path)
    assert str(err.value) == f"{path} {words}" or str(err.value).startswith(f"{path} {words}")
    assert err.value.missing == (case == "missing")


@pytest.mark.parametrize("case", ["fifo", "directory", "symlink_loop", "dev_zero", "unreadable"])
def test_agent_run_refuses_a_bad_model_path_with_exit_2_and_the_right_words(tmp_path, test_models, case):
    path, _, words = bad_paths(tmp_path, test_models["float32"])[case]
    proc = agent("run", path, *QUICK, prefix=DROP_DAC if case == "unreadable" else (), timeout=60)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert f"model file {path} {words}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_batch_reports_each_bad_path_as_a_document_and_runs_the_later_jobs(tmp_path, test_models):
    """Before: the FIFO hung the batch forever, the unreadable file and the directory ended it with a
    traceback (exit 70) and lost every later job."""
    cases = bad_paths(tmp_path, test_models["float32"])
    jobs = [{"model": str(path), "id": name, "runs": 1, "min_seconds": 0, "warmup_min_seconds": 0}
            for name, (path, _, _) in cases.items()]
    jobs.append({"model": str(test_models["float32"]), "id": "good", "runs": 1, "min_seconds": 0,
                 "warmup_min_seconds": 0})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    out = tmp_path / "out"
    proc = agent("batch", tmp_path / "jobs.json", "--out", out, prefix=DROP_DAC, timeout=180)
    assert proc.returncode == ExitCode.JOB_FAILED, proc.stderr
    assert "Traceback" not in proc.stderr
    for name, (path, kind, words) in cases.items():
        doc = json.loads((out / f"{name}.json").read_text())
        assert doc["status"] == "error" and doc["error"]["kind"] == kind, (name, doc["error"])
        assert f"{path} {words}" in doc["error"]["message"]
    assert json.loads((out / "good.json").read_text())["status"] == "ok"


def test_a_bad_inputs_path_is_a_usage_error_and_a_fifo_inputs_file_is_bad_inputs(tmp_path, test_models):
    fifo = tmp_path / "in.npz"
    os.mkfifo(fifo)
    proc = agent("run", test_models["float32"], "--inputs", fifo, *QUICK, timeout=60)
    assert proc.returncode == ExitCode.USAGE and f"--inputs file {fifo} is a FIFO" in proc.stderr

    from agent.job import JobSpec
    from agent.runner import run_job

    doc = run_job(JobSpec(model=str(test_models["float32"]), inputs=str(fifo), runs=1, min_seconds=0,
                          warmup_min_seconds=0, timeout=60))
    assert doc["status"] == "error" and doc["error"]["kind"] == "bad_inputs"
    assert "is a FIFO" in doc["error"]["message"]


def test_a_tensor_name_that_is_not_utf8_is_not_a_model(tmp_path, test_models):
    """Before: 'internal: agent bug: UnicodeDecodeError' (the runtime decodes names strictly)."""
    bad = corrupt_name(test_models["float32"], b"image", tmp_path / "badname.tflite")
    proc = agent("run", bad, "--json", *QUICK, timeout=60)
    assert proc.returncode == ExitCode.JOB_FAILED, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["error"]["kind"] == "not_a_model"
    assert "tensor name" in doc["error"]["message"] and "not valid UTF-8" in doc["error"]["message"]
