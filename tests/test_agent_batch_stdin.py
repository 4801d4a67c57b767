"""``agent batch -``: the job list as the first line of stdin (the fleet sends it with the command) and
``--inline`` documents in the ``done`` events - through the real agent zipapp and the bare device venv."""

from __future__ import annotations

import json
import subprocess

from agent.errors import ExitCode
from tests.fixtures_fleet import DEVICE_PYTHON


def batch(agent_pyz, tmp_path, stdin: bytes, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([DEVICE_PYTHON, str(agent_pyz), "batch", "-", "--out", str(tmp_path / "out"), *extra],
                          input=stdin, capture_output=True, timeout=300, check=False)


def test_jobs_on_stdin_run_and_each_done_event_carries_its_document(agent_pyz, test_models, tmp_path):
    jobs = [{"model": str(test_models["float32"]), "id": f"j{i}", "runs": 2, "warmup": 1, "min_seconds": 0,
             "warmup_min_seconds": 0, "seed": i} for i in range(2)]
    # the stdin stays open after the line (as the fleet holds it): the batch must not wait for EOF
    proc = subprocess.Popen([DEVICE_PYTHON, str(agent_pyz), "batch", "-", "--out", str(tmp_path / "out"),
                             "--inline", "--stop-on-stdin-eof"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write((json.dumps(jobs) + "\n").encode())
        proc.stdin.flush()
        out = proc.stdout.read()
        code = proc.wait(timeout=300)
        err = proc.stderr.read()
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert code == ExitCode.OK, err
    done = [e for e in map(json.loads, out.decode().splitlines()) if e["event"] == "done"]
    assert [e["id"] for e in done] == ["j0", "j1"]
    for event in done:
        on_disk = json.loads((tmp_path / "out" / f"{event['id']}.json").read_text())
        assert event["document"] == on_disk and event["file"] == str(tmp_path / "out" / f"{event['id']}.json")
        assert on_disk["status"] == "ok" and on_disk["job"]["seed"] == int(event["id"][1])


def test_without_inline_the_done_event_has_no_document(agent_pyz, test_models, tmp_path):
    jobs = [{"model": str(test_models["float32"]), "id": "a", "runs": 1, "warmup": 0, "min_seconds": 0,
             "warmup_min_seconds": 0}]
    proc = batch(agent_pyz, tmp_path, (json.dumps(jobs) + "\n").encode())
    assert proc.returncode == ExitCode.OK, proc.stderr
    (done,) = [e for e in map(json.loads, proc.stdout.decode().splitlines()) if e["event"] == "done"]
    assert "document" not in done


def test_stdin_that_ends_before_a_whole_line_is_a_usage_error(agent_pyz, tmp_path):
    proc = batch(agent_pyz, tmp_path, b'[{"model": "m.tflite"')
    assert proc.returncode == ExitCode.USAGE
    assert "standard input closed before a whole job list line" in proc.stderr.decode()
    assert not (tmp_path / "out").exists()


def test_a_bad_job_list_on_stdin_names_stdin(agent_pyz, tmp_path):
    proc = batch(agent_pyz, tmp_path, b'{"not": "a list"}\n')
    assert proc.returncode == ExitCode.USAGE
    assert "'-' (standard input)" in proc.stderr.decode() and "JSON list" in proc.stderr.decode()
