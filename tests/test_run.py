"""``edgebench run`` end to end: 4 loopback SSH devices + this machine, real agent, real models.

The family used here (fixture ``family``, tests/fixtures_family.py) is three real variants of one conv
net (fp32, fp16, int8 with int8 I/O) with a manifest and an eval set whose labels are the fp32 model's own
predictions, so fp32's top-1 must be exactly 1.0 and its cosine vs itself exactly 1.0.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controller.cli import main
from controller.fleet.agent_build import agent_zipapp
from controller.fleet.store import RESULT_COLUMNS
from tests.fixtures_family import sha256
from tests.fixtures_fleet import DEVICE_PYTHON, device_entry, write_inventory

FAST = ["--runs", "5", "--warmup", "1", "--min-seconds", "0", "--warmup-min-seconds", "0"]


def run_json(*argv: str) -> tuple[int, dict]:
    """Run ``edgebench run ... --json``; return (exit code, the JSON document it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", *argv, "--json"])
    return code, json.loads(out.getvalue())


@pytest.fixture(scope="module")
def fleet_file(ssh_fleet, tmp_path_factory) -> Path:
    """devices.yaml: the 4 loopback SSH boards + this machine (as a bare device: numpy + litert)."""
    path = ssh_fleet.inventory(tmp_path_factory.mktemp("inv") / "devices.yaml", local=True)
    text = path.read_text().replace("transport: local\n", f"transport: local\n  python: {DEVICE_PYTHON}\n")
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def two_runs(fleet_file, family, tmp_path_factory):
    """The same run twice over 4 SSH devices + local."""
    out = tmp_path_factory.mktemp("reports")
    first = run_json(str(family), "--devices", str(fleet_file), "--out", str(out), *FAST)
    second = run_json(str(family), "--devices", str(fleet_file), "--out", str(out), *FAST)
    return first, second


DEVICES = ["board-0", "board-1", "board-2", "board-3", "local"]


def test_run_over_four_ssh_devices_and_local(two_runs, family, ssh_fleet):
    (code, doc), _ = two_runs
    assert code == 0, doc["devices"]
    assert sorted(doc["devices"]) == DEVICES
    for name, status in doc["devices"].items():
        assert status["state"] == "done", (name, status["reason"])
        assert (status["jobs_done"], status["jobs_total"], status["jobs_failed"]) == (3, 3, 0)
        assert status["runtime"] == "ai-edge-litert" and status["runtime_version"] == "2.3.0"
        assert (status["host_key"] or "").startswith("SHA256:") == (name != "local")
    results = pd.read_parquet(Path(doc["run_dir"]) / "results.parquet")
    assert list(results.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert len(results) == 15 and set(results["status"]) == {"ok"}
    assert sorted(set(results["device"])) == DEVICES
    assert sorted(set(results["variant"])) == ["fp16", "fp32", "int8"]
    manifest = json.loads((family / "manifest.json").read_text())
    for row in results.to_dict("records"):
        assert row["model_sha256"] == manifest["variants"][row["variant"]]["sha256"]
        assert row["model_bytes"] == manifest["variants"][row["variant"]]["bytes"]
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["count"] >= 5 and row["peak_rss_kb"] > 0 and row["arch"] == "x86_64"
        assert row["run_id"] == doc["run_id"] and row["threads"] == 1
    fp32 = results[results["variant"] == "fp32"]
    assert (fp32["speedup_vs_fp32"] == 1.0).all()
    assert (fp32["top1"] == 1.0).all() and np.allclose(fp32["cosine_vs_fp32"], 1.0)
    assert (fp32["max_abs_vs_fp32"] == 0.0).all()
    fp16 = results[results["variant"] == "fp16"]
    assert (fp16["cosine_vs_fp32"] > 0.99).all() and (fp16["rmse_vs_fp32"] < 0.05).all()
    int8 = results[results["variant"] == "int8"]
    assert int8["cosine_vs_fp32"].between(0.5, 1.0).all() and int8["top1"].between(0, 1).all()
    # The same device got the same fingerprint in every row.
    assert results.groupby("device")["device_fingerprint"].nunique().max() == 1


def test_run_folder_layout_and_run_json(two_runs, family):
    (_, doc), _ = two_runs
    run_dir = Path(doc["run_dir"])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["run_id"] == doc["run_id"] == run_dir.name
    assert info["command_line"] and info["tool_version"] == "0.1.0" and info["user"]
    assert info["settings"]["job"]["runs"] == 5 and info["settings"]["job"]["min_seconds"] == 0
    assert info["exit_code"] == 0 and info["finished"]
    expected = sum(v.stat().st_size for v in family.glob("*.tflite"))
    expected += (family / "convnet.eval.npz").stat().st_size
    agent_bytes = Path(agent_zipapp()).stat().st_size
    for name in DEVICES:
        device = info["devices"][name]
        assert device["state"] == "done" and device["fingerprint"]
        # The 3 models and the eval set, plus the agent unless an earlier test left it there: nothing else.
        assert device["bytes_pushed"] in (expected, expected + agent_bytes), name
    samples = pd.read_parquet(run_dir / "samples.parquet")
    results = pd.read_parquet(run_dir / "results.parquet")
    assert len(samples) == int(results["count"].sum())
    assert (samples["latency_us"] > 0).all()
    for name in DEVICES:
        assert len(list((run_dir / "results" / name).glob("*.json"))) == 3
        assert len(list((run_dir / "outputs" / name).glob("*.npz"))) == 3


def test_models_are_content_addressed_on_the_device(two_runs, family, ssh_fleet):
    for name, workdir in ssh_fleet.workdirs.items():
        cached = sorted(p.name for p in (workdir / "models").glob("*.tflite"))
        assert cached == sorted(f"{sha256(p)}.tflite" for p in family.glob("*.tflite")), name
        for path in (workdir / "models").iterdir():
            assert path.name == f"{sha256(path)}.tflite"  # verified before it got its name
        assert len(list((workdir / "agent").glob("edgebench-agent-0.1.0-*.pyz"))) == 1


def test_second_identical_run_pushes_nothing(two_runs):
    (_, first), (code, second) = two_runs
    assert code == 0 and second["run_id"] != first["run_id"]
    assert {n: s["bytes_pushed"] for n, s in second["devices"].items()} == {n: 0 for n in DEVICES}
    assert {n: s["jobs_done"] for n, s in second["devices"].items()} == {n: 3 for n in DEVICES}
    info = json.loads((Path(second["run_dir"]) / "run.json").read_text())
    assert all(d["bytes_pushed"] == 0 for d in info["devices"].values())


def test_a_stopped_device_fails_with_its_reason_and_the_others_complete(
        ssh_fleet, sshd_factory, family, tmp_path, capsys):
    doomed = sshd_factory.start("doomed")
    known = tmp_path / "known_hosts"
    known.write_text(ssh_fleet.known_hosts.read_text() + doomed.host_key_line)
    entries = [dict(e, known_hosts=str(known)) for e in ssh_fleet.entries[:2]]
    entries.append(device_entry(doomed, ssh_fleet.key, known, tmp_path / "doomed work", connect_timeout=3))
    inventory = write_inventory(tmp_path / "devices.yaml", entries)
    doomed.stop()
    code, doc = run_json(str(family / "convnet.fp32.tflite"), "--devices", str(inventory),
                         "--out", str(tmp_path / "out"), *FAST)
    assert code == 1
    failed = doc["devices"]["doomed"]
    assert failed["state"] == "failed" and failed["kind"] == "unreachable"
    assert f"127.0.0.1:{doomed.port}" in failed["reason"] and "cannot connect" in failed["reason"]
    assert [doc["devices"][n]["state"] for n in ("board-0", "board-1")] == ["done", "done"]
    rows = {r["device"]: r for r in doc["results"]}
    assert rows["doomed"]["status"] == "not_run" and "cannot connect" in rows["doomed"]["error"]
    assert rows["board-0"]["status"] == rows["board-1"]["status"] == "ok"


def test_no_reachable_device_exits_3(ssh_fleet, sshd_factory, family, tmp_path, capsys):
    gone = sshd_factory.start("gone")
    inventory = write_inventory(tmp_path / "devices.yaml", [
        device_entry(gone, ssh_fleet.key, ssh_fleet.known_hosts, tmp_path / "w", connect_timeout=3)])
    gone.stop()
    code, doc = run_json(str(family / "convnet.fp32.tflite"), "--devices", str(inventory),
                         "--out", str(tmp_path / "out"), *FAST)
    assert code == 3 and doc["devices"]["gone"]["kind"] == "unreachable"


def local_inventory(tmp_path: Path, **extra) -> Path:
    entry = {"name": "here", "transport": "local", "workdir": str(tmp_path / "here work"),
             "python": DEVICE_PYTHON}
    entry.update(extra)
    return write_inventory(tmp_path / "devices.yaml", [entry])


def test_incompatible_model_is_skipped_with_the_reason_and_never_pushed(
        test_models, family, tmp_path, capsys):
    inventory = local_inventory(tmp_path)
    code = main(["run", str(family / "convnet.fp32.tflite"), str(test_models["bad_custom_op"]),
                 "--devices", str(inventory), "--out", str(tmp_path / "out"), *FAST])
    out = capsys.readouterr().out
    assert code == 1
    assert "skipped" in out and "run folder:" in out
    run_dir = Path(out.split("run folder:")[1].split()[0])
    results = pd.read_parquet(run_dir / "results.parquet")
    skipped = results[results["model"] == "bad_custom_op"].iloc[0]
    assert skipped["status"] == "skipped" and skipped["error_kind"] == "incompatible"
    assert "custom op" in skipped["error"]
    assert results[results["model"] == "convnet"].iloc[0]["status"] == "ok"
    cached = {p.name for p in (tmp_path / "here work" / "models").iterdir()}
    assert cached == {f"{sha256(family / 'convnet.fp32.tflite')}.tflite"}


@pytest.mark.parametrize("where", ["local", "ssh"])
def test_missing_python_is_reported_with_the_fix(ssh_fleet, family, tmp_path, where):
    missing = str(tmp_path / "no such python")
    if where == "local":
        inventory = local_inventory(tmp_path, python=missing)
    else:
        inventory = write_inventory(tmp_path / "devices.yaml", [dict(ssh_fleet.entries[0], python=missing,
                                                                     workdir=str(tmp_path / "w"))])
    code, doc = run_json(str(family / "convnet.fp32.tflite"), "--devices", str(inventory),
                         "--out", str(tmp_path / "out"), *FAST)
    (status,) = doc["devices"].values()
    assert code == 1 and status["state"] == "failed" and status["kind"] == "python"
    assert missing in status["reason"] and "edgebench bootstrap" in status["reason"]


def test_a_locked_device_is_reported_busy(family, tmp_path, capsys):
    inventory = local_inventory(tmp_path)
    workdir = tmp_path / "here work"
    workdir.mkdir()
    with open(workdir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another controller is measuring on this device
        code, doc = run_json(str(family / "convnet.fp32.tflite"), "--devices", str(inventory),
                             "--out", str(tmp_path / "out"), "--lock-timeout", "1", *FAST)
    status = doc["devices"]["here"]
    assert code == 1 and status["kind"] == "busy" and "lock" in status["reason"]
    # Unlocked, the same device runs.
    code, doc = run_json(str(family / "convnet.fp32.tflite"), "--devices", str(inventory),
                         "--out", str(tmp_path / "out"), *FAST)
    assert code == 0 and doc["devices"]["here"]["bytes_pushed"] == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope.tflite"], "model nope.tflite does not exist"),
        (["MODEL", "--device", "ghost"], "no device 'ghost'"),
        (["MODEL", "--tag", "gpu"], "tag 'gpu'"),
        (["MODEL", "--runs", "0"], "--runs"),
        (["MODEL", "--eval", "missing.npz"], "--eval missing.npz"),
    ],
)
def test_usage_errors_exit_2_and_name_the_problem(family, tmp_path, capsys, argv, message):
    inventory = local_inventory(tmp_path)
    argv = [str(family / "convnet.fp32.tflite") if a == "MODEL" else a for a in argv]
    assert main(["run", *argv, "--devices", str(inventory), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_ctrl_c_keeps_the_results_that_completed(family, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    inventory = local_inventory(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "run", str(family), "--devices", str(inventory), "--out", str(out),
         "--runs", "5", "--min-seconds", "1.5", "--warmup-min-seconds", "0", "--no-eval", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(out.glob("*/results/here/*.json")):
            time.sleep(0.1)
        assert list(out.glob("*/results/here/*.json")), "no job finished within 60 s"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 130 and "interrupted" in err, err
    (run_dir,) = [p for p in out.iterdir() if not p.name.startswith(".")]  # .history/: the index
    results = pd.read_parquet(run_dir / "results.parquet")
    ok = results[results["status"] == "ok"]
    assert 1 <= len(ok) < 3 and (ok["p50_ms"] > 0).all()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["interrupted"] is True
    # The agent's batch was stopped with the controller (its lock is free again).
    with open(tmp_path / "here work" / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_the_demo_on_the_default_devices_yaml(tmp_path):
    """What `make demo` runs: the demo family on the repository's devices.yaml (this machine, the
    controller's own python) - only the workdir moved to a temp folder. Accuracy comes from the family's
    own eval set and must equal what `edgebench convert` recorded for the same runtime."""
    repo = Path(__file__).resolve().parent.parent
    text = (repo / "devices.yaml").read_text().replace("workdir: ~/.cache/edgebench",
                                                        f"workdir: {tmp_path / 'demo work'}")
    assert str(tmp_path) in text
    (tmp_path / "devices.yaml").write_text(text)
    code, doc = run_json(str(repo / "models" / "demo"), "--devices", str(tmp_path / "devices.yaml"),
                         "--out", str(tmp_path / "out"), *FAST)
    assert code == 0, doc["devices"]
    assert doc["devices"]["local"]["python"] == sys.executable
    recorded = {v["variant"]: v for v in json.loads((repo / "models/demo/accuracy.json").read_text())["variants"]}
    rows = {r["variant"]: r for r in doc["results"]}
    assert sorted(rows) == ["dynamic", "fp16", "fp32", "int8"]
    for variant, row in rows.items():
        assert row["status"] == "ok" and row["runtime"] == "ai-edge-litert"
        assert row["top1"] == pytest.approx(recorded[variant]["top1"], abs=1e-9)
        assert row["cosine_vs_fp32"] == pytest.approx(recorded[variant]["cosine"], abs=1e-6)


@pytest.mark.parametrize("bad", ["bad_not_flatbuffer", "bad_truncated"])
def test_a_corrupt_model_is_skipped_with_the_reason_and_the_others_run(test_models, family, tmp_path, capsys, bad):
    inventory = local_inventory(tmp_path)
    code = main(["run", str(test_models[bad]), str(family / "convnet.fp32.tflite"), "--devices", str(inventory),
                 "--out", str(tmp_path / "out"), *FAST])
    out = capsys.readouterr().out
    assert code == 1
    run_dir = Path(out.split("run folder:")[1].split()[0])
    results = pd.read_parquet(run_dir / "results.parquet")
    skipped = results[results["model"] == bad].iloc[0]
    assert skipped["status"] == "skipped" and skipped["error_kind"] == "bad_model"
    assert str(test_models[bad]) in skipped["error"] and "not a" in skipped["error"]  # names the file and why
    assert "give a .tflite file" in skipped["error"] or "convert the model again" in skipped["error"]  # the fix
    assert results[results["model"] == "convnet"].iloc[0]["status"] == "ok"
    cached = {p.name for p in (tmp_path / "here work" / "models").iterdir()}
    assert cached == {f"{sha256(family / 'convnet.fp32.tflite')}.tflite"}  # the corrupt file never pushed


def test_a_device_whose_disk_is_too_full_is_reported_and_the_others_complete(ssh_fleet, tiny_disk, tmp_path):
    demo_fp32 = Path(__file__).resolve().parent.parent / "models" / "demo" / "demo.fp32.tflite"  # 660 KiB
    entries = [dict(ssh_fleet.entries[0], name="full", workdir=str(tiny_disk / "edgebench")),
               {"name": "here", "transport": "local", "workdir": str(tmp_path / "here work"),
                "python": DEVICE_PYTHON}]
    inventory = write_inventory(tmp_path / "devices.yaml", entries)
    code, doc = run_json(str(demo_fp32), "--devices", str(inventory), "--out", str(tmp_path / "out"),
                         "--no-eval", *FAST)
    assert code == 1
    full = doc["devices"]["full"]
    assert full["state"] == "failed" and full["kind"] == "disk_full"
    assert "disk full" in full["reason"] and "free space or set another workdir" in full["reason"]
    assert not list((tiny_disk / "edgebench" / "models").iterdir())  # nothing half-pushed left behind
    assert doc["devices"]["here"]["state"] == "done"
    rows = {r["device"]: r for r in doc["results"]}
    assert rows["here"]["status"] == "ok" and rows["full"]["status"] == "not_run"


def test_a_model_given_twice_gets_two_jobs_and_a_skipped_model_one_row(test_models, family, tmp_path, capsys):
    """Job ids carry the model's position on the command line: a model named twice is measured twice
    (two rows, two ids), and a skipped model's row has the id of its own position."""
    inventory = local_inventory(tmp_path)
    good = str(family / "convnet.fp32.tflite")
    code = main(["run", str(test_models["bad_custom_op"]), good, good, "--devices", str(inventory),
                 "--out", str(tmp_path / "out"), *FAST])
    out = capsys.readouterr().out
    assert code == 1
    results = pd.read_parquet(Path(out.split("run folder:")[1].split()[0]) / "results.parquet")
    assert sorted(results["job_id"]) == ["000-bad_custom_op---t1", "001-convnet-fp32-t1",
                                         "002-convnet-fp32-t1"]
    assert list(results.sort_values("job_id")["status"]) == ["skipped", "ok", "ok"]
