"""Cheap, table-driven checks of the fleet's pieces that end-to-end SSH runs exercise only as a whole:
result rows, speedup vs fp32, job ids, the group runner and its exit-code rule, the start gate, model
collection, and the message for every agent exit code the controller can see."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from controller.errors import DeviceError, ExitCode, InputError
from controller.fleet.device_run import StartGate, job_id
from controller.fleet.group import GroupResult, Outcome, run_group
from controller.fleet.inventory import Device
from controller.fleet.models import ModelRef, collect_models
from controller.fleet.options import RunOptions
from controller.fleet.run import FleetResult
from controller.fleet.session import DeviceSession, DeviceStatus
from controller.fleet.store import RESULT_COLUMNS, add_speedup, not_run_row, result_row
from controller.fleet.transport import CommandResult

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "models" / "demo"


def _doc(status="ok", p50=2.0, variant="fp32", threads=1, job="j1"):
    return {"schema_version": 1, "status": status, "error": None if status == "ok" else
            {"kind": "runtime_error", "message": "boom", "stderr_tail": ""},
            "job": {"id": job, "threads": threads, "meta": {"model_name": "m", "variant": variant,
                                                            "sha256": "ab" * 32, "device_fingerprint": "f"}},
            "model": {"sha256": "ab" * 32, "bytes": 123},
            "runtime": {"name": "ai-edge-litert", "version": "2.3.0", "delegates": ["XNNPACK"]},
            "timing": {"p50_ms": p50, "p90_ms": p50 * 1.5, "count": 10, "noisy": False},
            "memory": {"peak_rss_kb": 1000}, "env": {"arch": "x86_64", "cpu_count": 2}}


def test_result_row_takes_typed_values_from_the_document():
    row = result_row("run1", "dev", _doc())
    assert row["device"] == "dev" and row["model"] == "m" and row["variant"] == "fp32"
    assert row["p50_ms"] == 2.0 and row["p90_ms"] == 3.0 and row["count"] == 10
    assert row["delegates"] == "XNNPACK" and row["model_bytes"] == 123 and row["device_fingerprint"] == "f"
    assert row["speedup_vs_fp32"] is None and row["drift"] is None
    failed = result_row("run1", "dev", _doc(status="error"))
    assert failed["error"] == "boom" and failed["error_kind"] == "runtime_error"


def test_not_run_row_has_every_column_and_the_reason():
    row = not_run_row("r", "dev", {"id": "007-x", "threads": 2, "meta": {"model_name": "m", "variant": "int8",
                                                                        "sha256": "cd", "bytes": 9}},
                      "skipped", "cannot load", "incompatible")
    assert set(row) == set(RESULT_COLUMNS)
    assert (row["status"], row["error"], row["error_kind"], row["threads"]) == ("skipped", "cannot load",
                                                                                "incompatible", 2)


@pytest.mark.parametrize(("rows", "expected"), [
    # fp32 twin on the same device, model, threads -> ratio; other threads or device -> none
    ([("d", "fp32", 1, "ok", 2.0), ("d", "int8", 1, "ok", 0.5)], [1.0, 4.0]),
    ([("d", "fp32", 1, "ok", 2.0), ("d", "int8", 2, "ok", 0.5)], [1.0, None]),
    ([("d", "fp32", 1, "ok", 2.0), ("e", "int8", 1, "ok", 0.5)], [1.0, None]),
    ([("d", "fp32", 1, "error", None), ("d", "int8", 1, "ok", 0.5)], [None, None]),
    ([("d", "fp32", 1, "ok", 2.0), ("d", "fp16", 1, "timeout", None)], [1.0, None]),
])
def test_speedup_vs_fp32(rows, expected):
    table = [{"device": d, "model": "m", "variant": v, "threads": t, "status": s, "p50_ms": p,
              "speedup_vs_fp32": None} for d, v, t, s, p in rows]
    add_speedup(table)
    assert [r["speedup_vs_fp32"] for r in table] == expected


@pytest.mark.parametrize(("index", "name", "variant", "threads", "expected"), [
    (0, "demo", "fp32", 1, "000-demo-fp32-t1"),
    (12, "my model", "int8", 4, "012-my_model-int8-t4"),
    (3, "a/b;$(x)", "-", 2, "003-a_b_x_---t2"),  # "-" variant: a plain file
    (1, "x" * 100, "fp16", 1, f"001-{'x' * 60}-t1"),
])
def test_job_ids_are_file_name_safe_and_carry_the_position(index, name, variant, threads, expected):
    model = ModelRef(name, variant, "/m.tflite", "00", 1)
    assert job_id(index, model, threads) == expected


def _outcome(name, ok, kind=None):
    return Outcome(name, ok=ok, kind=None if ok else kind, reason=None if ok else "why")


@pytest.mark.parametrize(("outcomes", "interrupted", "jobs_failed", "expected"), [
    ([("a", True, None), ("b", True, None)], False, False, ExitCode.OK),
    ([("a", True, None), ("b", True, None)], False, True, ExitCode.PARTIAL),
    ([("a", True, None), ("b", False, "unreachable")], False, False, ExitCode.PARTIAL),
    ([("a", False, "unreachable"), ("b", False, "host_key")], False, False, ExitCode.NO_DEVICE),
    ([("a", False, "auth"), ("b", False, "no_answer")], False, False, ExitCode.NO_DEVICE),
    # reached, but failed there (bootstrap's pip, a missing python): not "unreachable"
    ([("a", False, "unreachable"), ("b", False, "python")], False, False, ExitCode.PARTIAL),
    ([("a", False, "pip")], False, False, ExitCode.PARTIAL),
    ([("a", False, "unreachable")], True, False, ExitCode.INTERRUPTED),
])
def test_the_exit_code_rule(outcomes, interrupted, jobs_failed, expected):
    group = GroupResult({n: _outcome(n, ok, kind) for n, ok, kind in outcomes}, interrupted=interrupted)
    assert group.exit_code(jobs_failed=jobs_failed) == expected


def test_drift_comes_after_the_group_rule():
    import pandas as pd

    ok = GroupResult({"a": _outcome("a", True)})
    frame = pd.DataFrame([{"device": "a", "job_id": "001", "drift": True},
                          {"device": "a", "job_id": "002", "drift": None}])
    result = FleetResult("run", {"a": DeviceStatus("a", state="done")}, ok, frame)
    assert result.drifted == ["a/001"] and result.exit_code() == ExitCode.DRIFT
    result.devices["a"].jobs_failed = 1  # a failed job outranks drift
    assert result.exit_code() == ExitCode.PARTIAL
    clean = FleetResult("run", {"a": DeviceStatus("a", state="done")}, ok, frame.assign(drift=False))
    assert clean.exit_code() == ExitCode.OK


def _devices(*names):
    return [Device(name=n, transport="local") for n in names]


def test_run_group_records_values_device_errors_and_bugs():
    def work(device):
        if device.name == "down":
            raise DeviceError("down", "no route", kind="unreachable")
        if device.name == "bug":
            raise KeyError("oops")
        return device.name.upper()

    group = run_group(_devices("up", "down", "bug"), work, parallel=2)
    assert list(group.outcomes) == ["up", "down", "bug"]
    assert group.outcomes["up"].ok and group.outcomes["up"].value == "UP"
    assert (group.outcomes["down"].kind, group.outcomes["down"].reason) == ("unreachable", "no route")
    assert group.outcomes["bug"].kind == "internal" and "KeyError" in group.outcomes["bug"].reason
    assert set(group.failed) == {"down", "bug"} and set(group.succeeded) == {"up"}
    assert group.exit_code() == ExitCode.PARTIAL


def test_run_group_deadline_turns_a_hung_device_into_no_answer():
    release = threading.Event()

    def work(device):
        if device.name == "hung":
            release.wait(10)  # bounded; released below
        return True

    start = time.monotonic()
    group = run_group(_devices("fast", "hung"), work, deadline=0.5)
    elapsed = time.monotonic() - start
    release.set()
    assert elapsed < 5
    assert group.outcomes["fast"].ok
    assert group.outcomes["hung"].kind == "no_answer" and "0.5 s" in group.outcomes["hung"].reason


def test_run_group_limits_parallelism():
    running, peak, lock = [0], [0], threading.Lock()

    def work(device):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    run_group(_devices(*"abcdef"), work, parallel=2)
    assert peak[0] == 2


def test_start_gate_releases_when_all_are_ready_or_at_its_deadline():
    gate = StartGate(2, deadline=5.0)
    gate.ready()
    t = threading.Thread(target=gate.wait)
    t.start()
    t.join(0.2)
    assert t.is_alive()  # one device still preparing
    gate.ready()
    t.join(2)
    assert not t.is_alive()
    late = StartGate(2, deadline=0.2)
    start = time.monotonic()
    late.wait()
    assert 0.15 < time.monotonic() - start < 3


def test_collect_models_from_folders_and_files(tmp_path):
    models = collect_models([str(DEMO)])
    assert [m.variant for m in models] == ["fp32", "fp16", "dynamic", "int8"]
    assert all(m.name == "demo" and m.eval_path and len(m.sha256) == 64 for m in models)
    shutil.copy(DEMO / "demo.int8.tflite", tmp_path / "net.int8.tflite")
    shutil.copy(DEMO / "demo.fp32.tflite", tmp_path / "plain.tflite")
    more = collect_models([str(tmp_path / "net.int8.tflite"), str(tmp_path / "plain.tflite")])
    assert [(m.name, m.variant) for m in more] == [("net", "int8"), ("plain", "-")]
    assert more[0].sha256 == models[3].sha256
    for bad, words in ((tmp_path / "nope.tflite", "nope.tflite does not exist"), (tmp_path / "x.txt", "not a .tflite")):
        if bad.suffix == ".txt":
            bad.write_text("x")
        with pytest.raises(InputError, match=words):
            collect_models([str(bad)])
    with pytest.raises(InputError, match="no models"):
        collect_models([])


def test_run_options_validate_the_template_once():
    from agent.job import JobSpec

    assert RunOptions().job.timeout > 0
    with pytest.raises(Exception, match="runs"):
        RunOptions(job=JobSpec(model="", runs=0))
    with pytest.raises(Exception, match="threads"):
        RunOptions(threads=(0,))


def _session(tmp_path):
    session = DeviceSession(Device(name="rpi", transport="local", workdir=str(tmp_path)), "agent.pyz")
    session.workdir, session.python = str(tmp_path), "/usr/bin/python3"
    return session


@pytest.mark.parametrize(("code", "stdout", "stderr", "kind", "words"), [
    (3, '{"runtimes": [{"name": "ai-edge-litert", "ok": false, "error": "No module named ai_edge_litert"}]}',
     "", "runtime", ["no TFLite runtime in /usr/bin/python3", "No module named ai_edge_litert",
                     "edgebench bootstrap --device rpi", "python:"]),
    (3, '{"runtimes": []}', "", "runtime", ["none installed", "edgebench bootstrap --device rpi"]),
    (4, "", "", "busy", ["busy", "lock", "--lock-timeout"]),
    (2, "", "agent: error: unknown option --cpus", "agent", ["unknown option --cpus", "--agent"]),
    (70, "", "Traceback ...\nZeroDivisionError", "agent", ["bug in the agent", "ZeroDivisionError"]),
    (130, "", "", "interrupted", ["interrupted"]),
    (-9, "", "", "interrupted", ["killed by signal 9"]),
    (1, "", "OSError: [Errno 28] No space left on device", "disk_full", ["disk full", "free space"]),
    (5, "", ("error: the device's disk is full (No space left on device) while writing the result document "
     "/w/r.json: 0 KiB free there; free space on the device"), "disk_full",
     ["stopped: the device's disk is full", "0 KiB free", "free space on the device"]),
    (9, "", "something odd", "agent", ["failed (exit 9)", "something odd"]),
    (9, "", "", "agent", ["it printed nothing"]),
])
def test_every_agent_exit_code_gets_its_reason_and_fix(tmp_path, code, stdout, stderr, kind, words):
    error = _session(tmp_path).agent_failure("info", CommandResult(["x"], code, stdout, stderr, 0.1))
    assert error.kind == kind
    for word in words:
        assert word in error.reason
    assert not error.reason.endswith(": ")


def test_a_python_without_a_runtime_is_named_with_the_fix_through_the_fleet(tmp_path):
    """First contact with a fresh board: its python has no TFLite runtime (a real venv without one)."""
    from controller.cli import main

    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    fleet = tmp_path / "devices.yaml"
    fleet.write_text(yaml.safe_dump({"devices": [{"name": "fresh", "transport": "local",
                                                  "python": str(venv / "bin" / "python"),
                                                  "workdir": str(tmp_path / "work")}]}))
    import contextlib
    import io
    import json

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", str(DEMO / "demo.int8.tflite"), "--devices", str(fleet), "--out",
                     str(tmp_path / "out"), "--runs", "1", "--json"])
    doc = json.loads(out.getvalue())
    status = doc["devices"]["fresh"]
    assert code == ExitCode.PARTIAL and status["kind"] == "runtime"
    assert f"no TFLite runtime in {venv / 'bin' / 'python'}" in status["reason"]
    assert "edgebench bootstrap --device fresh" in status["reason"]
    assert [r["status"] for r in doc["results"]] == ["not_run"]


@pytest.mark.parametrize(("doc", "words"), [
    ([1, 2], "not a result document"),
    ({"status": "ok"}, "without an integer schema_version"),
    ({"schema_version": True}, "without an integer schema_version"),
    ({"schema_version": 999}, "newer than this controller reads"),
])
def test_documents_the_controller_cannot_read_are_refused_by_name(doc, words):
    from controller.fleet.store import check_document

    with pytest.raises(InputError, match=words) as info:
        check_document(doc, "results/dev/001.json")
    assert "results/dev/001.json" in str(info.value)
    assert check_document(_doc(), "x")["status"] == "ok"
