"""The agent's command line as a controller (or a person on a board) uses it: run, info, batch, exit codes;
and the zipapp with a python that has only numpy + ai-edge-litert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ExitCode
from agent.lock import DeviceLock

REPO = Path(__file__).resolve().parent.parent
QUICK = ["--runs", "3", "--min-seconds", "0.01", "--warmup-min-seconds", "0"]


def agent(*args, python=sys.executable, entry=("-m", "agent"), env=None, timeout=120, cwd=REPO):
    return subprocess.run([str(python), *entry, *map(str, args)], capture_output=True, text=True, check=False,
                          timeout=timeout, env=dict(os.environ, **(env or {})), cwd=cwd)


# ---- run -------------------------------------------------------------------------------------

def test_run_json_prints_the_document_and_exits_0(test_models):
    proc = agent("run", test_models["float32"], "--threads", "2", "--json", *QUICK)
    assert proc.returncode == ExitCode.OK, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "ok" and doc["runtime"]["num_threads"] == 2
    assert doc["timing"]["count"] == len(doc["timing"]["samples_us"])


def test_run_without_json_prints_a_readable_summary(test_models):
    proc = agent("run", test_models["uint8_io"], "--runtime", "tflite-runtime", *QUICK)
    assert proc.returncode == 0, proc.stderr
    assert "tflite-runtime 2.14.0" in proc.stdout and "p50" in proc.stdout and "status    ok" in proc.stdout


def test_a_bad_model_exits_1_with_the_reason_and_the_agent_survives(test_models):
    proc = agent("run", test_models["bad_custom_op"], *QUICK)
    assert proc.returncode == ExitCode.JOB_FAILED
    assert "unresolved_op" in proc.stdout and "Cumprod" in proc.stdout


def test_run_options_reach_the_job(test_models, tmp_path):
    np.savez(tmp_path / "seq.npz", seq=np.ones((2, 1, 12, 4), np.float32))
    proc = agent("run", test_models["dynamic_length"], "--input-shape", "seq=1,12,4", "--inputs",
                 tmp_path / "seq.npz", "--save-outputs", tmp_path / "out.npz", "--no-xnnpack", "--seed", "7",
                 "--warmup", "2", "--max-seconds", "5", "--timeout", "50", "--json", *QUICK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    job = doc["job"]
    assert job["input_shapes"] == {"seq": [1, 12, 4]} and job["xnnpack"] is False and job["seed"] == 7
    assert job["warmup"] == 2 and job["max_seconds"] == 5 and job["timeout"] == 50 and job["runs"] == 3
    assert doc["timing"]["warmup_count"] >= 2 and doc["runtime"]["delegates"] == []
    saved = np.load(tmp_path / "out.npz")
    assert saved[doc["model"]["outputs"][0]["name"]].shape == (2, 1, 6)


def test_repeat_cooldown_and_run_delay_reach_the_job(test_models):
    proc = agent("run", test_models["bench_tiny"], "--repeat", "2", "--cooldown", "0.1", "--run-delay", "0.002",
                 "--json", *QUICK)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["job"]["repeat"], doc["job"]["cooldown"], doc["job"]["run_delay"]) == (2, 0.1, 0.002)
    assert len(doc["processes"]) == 2 and doc["timing"]["process_count"] == 2
    assert doc["timing"]["between_process_cv"] is not None


@pytest.mark.parametrize("args,needle", [
    (["run", "MODEL", "--repeat", "0"], "repeat must be between 1 and 1000"),
    (["run", "MODEL", "--cooldown", "-1"], "cooldown must be between 0 and"),
    (["run", "MODEL", "--run-delay", "-0.5"], "run_delay must be between 0 and"),
    (["run", "missing.tflite"], "does not exist"),
    (["run", "MODEL", "--input-shape", "seq=1,x"], "NAME=d1,d2"),
    (["run", "MODEL", "--threads", "0"], "threads"),
    (["run", "MODEL", "--runtime", "onnx"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    ([], "usage"),
])
def test_usage_errors_exit_2_with_a_message(test_models, args, needle):
    args = [str(test_models["float32"]) if a == "MODEL" else a for a in args]
    proc = agent(*args)
    assert proc.returncode == ExitCode.USAGE
    assert needle in proc.stderr


# ---- info ------------------------------------------------------------------------------------------

def test_info_lists_every_runtime_with_versions():
    proc = agent("info", "--json", "--workdir", "/tmp")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    runtimes = {r["name"]: r for r in info["runtimes"]}
    assert runtimes["ai-edge-litert"] == {"name": "ai-edge-litert", "module": "ai_edge_litert.interpreter",
                                          "version": "2.3.0", "ok": True, "error": None}
    assert runtimes["tflite-runtime"]["version"] == "2.14.0" and runtimes["tflite-runtime"]["ok"]
    assert runtimes["tensorflow"]["version"] == "2.21.0" and runtimes["tensorflow"]["ok"]
    assert info["numpy_version"] == "1.26.4" and info["python_executable"] == sys.executable
    assert info["disk_free_kb"] > 0
    assert {"hostname", "arch", "cpu_model", "cpu_count", "governor", "freq_mhz", "loadavg", "mem_total_kb",
            "kernel", "python"} <= set(info["env"])


# ---- batch -----------------------------------------------------------------------------------------

def write_jobs(path, jobs):
    path.write_text(json.dumps(jobs))
    return path


def job(model, id, **kw):
    return {"model": str(model), "id": id, "runs": 3, "min_seconds": 0.01, "warmup_min_seconds": 0, **kw}


def test_batch_writes_a_document_per_job_and_reports_progress(test_models, tmp_path):
    jobs = write_jobs(tmp_path / "jobs.json", [
        job(test_models["float32"], "a", meta={"variant": "fp32"}),
        job(test_models["bad_flex_op"], "b"),
        job(test_models["int8_io"], "c", threads=2, save_outputs=str(tmp_path / "c.npz")),
    ])
    out = tmp_path / "results"
    proc = agent("batch", jobs, "--out", out, "--lock", tmp_path / "lock", "--shuffle-seed", "3")
    assert proc.returncode == ExitCode.JOB_FAILED, proc.stderr  # job b failed; a and c kept
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    starts = [e for e in events if e["event"] == "start"]
    dones = {e["id"]: e for e in events if e["event"] == "done"}
    assert sorted(e["id"] for e in starts) == ["a", "b", "c"]
    assert [e["index"] for e in starts] == [0, 1, 2] and {e["total"] for e in starts} == {3}
    assert {k: v["status"] for k, v in dones.items()} == {"a": "ok", "b": "error", "c": "ok"}
    for name in "abc":
        doc = json.loads((out / f"{name}.json").read_text())
        assert doc["job"]["id"] == name and doc["status"] == dones[name]["status"]
        assert doc["batch"]["shuffle_seed"] == 3
    assert json.loads((out / "a.json").read_text())["job"]["meta"] == {"variant": "fp32"}
    assert json.loads((out / "b.json").read_text())["error"]["kind"] == "flex_op"
    assert (tmp_path / "c.npz").exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.json", "c.json"]  # no temp files left


def test_the_shuffle_seed_fixes_the_order(test_models, tmp_path):
    jobs = write_jobs(tmp_path / "jobs.json",
                      [job(test_models["two_inputs"], f"j{i}", runs=1, min_seconds=0) for i in range(6)])

    def order(seed):
        proc = agent("batch", jobs, "--out", tmp_path / f"o{seed}", "--shuffle-seed", seed)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line)["id"] for line in proc.stdout.splitlines() if '"start"' in line]

    first = order(11)
    assert first == order(11)
    assert sorted(first) == [f"j{i}" for i in range(6)]
    assert first != [f"j{i}" for i in range(6)] or order(12) != first


def test_cooldown_sleeps_between_jobs_not_after_the_last(test_models, tmp_path):
    jobs = write_jobs(tmp_path / "jobs.json",
                      [job(test_models["two_inputs"], f"j{i}", runs=1, min_seconds=0) for i in range(2)])
    t0 = time.time()
    proc = agent("batch", jobs, "--out", tmp_path / "out", "--cooldown", "1.5")
    elapsed = time.time() - t0
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    (done0,) = [e for e in events if e["event"] == "done" and e["id"] == "j0"]
    (start1,) = [e for e in events if e["event"] == "start" and e["id"] == "j1"]
    (done1,) = [e for e in events if e["event"] == "done" and e["id"] == "j1"]
    assert start1["time"] - done0["time"] >= 1.5
    assert t0 + elapsed - done1["time"] < 1.5  # no sleep after the last job
    assert json.loads((tmp_path / "out" / "j1.json").read_text())["batch"]["cooldown_s"] == 1.5


def test_a_held_device_lock_makes_batch_exit_4_naming_the_holder(test_models, tmp_path):
    jobs = write_jobs(tmp_path / "jobs.json", [job(test_models["float32"], "a")])
    with DeviceLock(str(tmp_path / "dev.lock"), timeout=1):
        proc = agent("batch", jobs, "--out", tmp_path / "out", "--lock", tmp_path / "dev.lock",
                     "--lock-timeout", "0.5")
    assert proc.returncode == ExitCode.BUSY
    assert f"pid {os.getpid()}" in proc.stderr and "--lock-timeout" in proc.stderr
    assert not (tmp_path / "out" / "a.json").exists()
    # released: the same batch now runs
    assert agent("batch", jobs, "--out", tmp_path / "out", "--lock", tmp_path / "dev.lock").returncode == 0


@pytest.mark.parametrize("content,needle", [
    ("[{\"model\": \"m.tflite\", \"thread\": 2}]", "unknown job key(s) ['thread']"),
    ("{\"model\": \"m.tflite\"}", "JSON list"),
    ("[{\"model\": \"m\", \"id\": \"x\"}, {\"model\": \"m\", \"id\": \"x\"}]", "used twice"),
    ("[{\"model\": \"m\", \"id\": \"../escape\"}]", "names the result file"),
    ("[{\"id\": \"x\"}]", "needs a 'model'"),
    ("not json", "not valid JSON"),
])
def test_a_bad_job_file_exits_2_before_running_anything(tmp_path, content, needle):
    (tmp_path / "jobs.json").write_text(content)
    proc = agent("batch", tmp_path / "jobs.json", "--out", tmp_path / "out")
    assert proc.returncode == ExitCode.USAGE
    assert needle in proc.stderr and "jobs.json" in proc.stderr


# ---- the zipapp on a bare device -------------------------------------------------------------------

def test_make_agent_target_builds_a_zipapp_with_the_package(agent_pyz):
    import zipfile

    names = zipfile.ZipFile(agent_pyz).namelist()
    assert "__main__.py" in names and "agent/cli.py" in names and "agent/worker.py" in names
    assert not any("__pycache__" in n or n.endswith("build.py") for n in names)
    assert agent_pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_the_zipapp_runs_with_only_numpy_and_ai_edge_litert(agent_pyz, agent_venv_python, test_models, tmp_path):
    assert agent("-c", "import tflite_runtime", python=agent_venv_python, entry=()).returncode != 0
    pyz = (str(agent_pyz),)
    info = agent("info", "--json", python=agent_venv_python, entry=pyz, cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    ok = {r["name"]: r["ok"] for r in json.loads(info.stdout)["runtimes"]}
    assert ok == {"ai-edge-litert": True, "tflite-runtime": False, "tensorflow": False}

    np.savez(tmp_path / "x.npz", x=np.zeros((2, 8, 8, 1), np.float32))
    run = agent("run", test_models["int8_io"], "--json", "--inputs", tmp_path / "x.npz", "--save-outputs",
                tmp_path / "o.npz", *QUICK, python=agent_venv_python, entry=pyz, cwd=tmp_path,
                env={"EDGEBENCH_AGENT_DEBUG_MODULES": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads(run.stdout)
    assert doc["status"] == "ok" and doc["worker"]["python"] == str(agent_venv_python)
    stdlib = set(sys.stdlib_module_names)
    # ai-edge-litert's own dependencies count as "the runtime"
    bare = agent("-c", "import sys, numpy, ai_edge_litert.interpreter; "
                 "print(' '.join({m.split('.')[0] for m in sys.modules}))", python=agent_venv_python, entry=())
    assert set(doc["debug"]["modules"]) - stdlib - set(bare.stdout.split()) == {"agent"}
    assert np.load(tmp_path / "o.npz")[f"raw/{doc['model']['outputs'][0]['name']}"].shape == (2, 1, 10)

    missing = agent("run", test_models["float32"], "--runtime", "tflite-runtime", python=agent_venv_python,
                    entry=pyz, cwd=tmp_path)
    assert missing.returncode == ExitCode.NO_RUNTIME
    assert "tflite-runtime is not installed" in missing.stderr

    jobs = write_jobs(tmp_path / "jobs.json", [job(test_models["float32"], "z"),
                                               job(test_models["float32"], "old", runtime="tflite-runtime")])
    batch = agent("batch", jobs, "--out", tmp_path / "out", python=agent_venv_python, entry=pyz, cwd=tmp_path)
    assert batch.returncode == ExitCode.JOB_FAILED, batch.stderr  # a job's missing runtime is data: 1, not 3
    assert json.loads((tmp_path / "out" / "z.json").read_text())["status"] == "ok"
    old = json.loads((tmp_path / "out" / "old.json").read_text())
    assert old["status"] == "error" and old["error"]["kind"] == "no_runtime"


@pytest.mark.parametrize("how", ["sigterm", "stdin_eof"])
def test_sigterm_kills_the_running_worker_keeps_finished_results_and_frees_the_lock(test_models, tmp_path, how):
    """SIGTERM, or (with --stop-on-stdin-eof) its controller closing stdin, as when an SSH session
    drops: the batch unwinds like Ctrl-C."""
    import select
    import signal

    import psutil

    jobs = write_jobs(tmp_path / "jobs.json", [
        job(test_models["float32"], "quick"),
        job(test_models["bench_medium"], "long", runs=10**6, min_seconds=120, max_seconds=120, timeout=300),
    ])
    lock = tmp_path / "dev.lock"
    extra = ["--stop-on-stdin-eof"] if how == "stdin_eof" else []
    proc = subprocess.Popen([sys.executable, "-m", "agent", "batch", str(jobs), "--out", str(tmp_path / "out"),
                             "--lock", str(lock), *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        seen = b""
        while b'"start", "id": "long"' not in seen:  # raw reads: no buffered line hiding behind select()
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the long job never started; stdout so far: {seen!r}"
            if select.select([proc.stdout], [], [], remaining)[0]:
                seen += os.read(proc.stdout.fileno(), 65536)
        workers = []
        while not workers and time.monotonic() < deadline:  # the worker is spawned right after the event
            workers = psutil.Process(proc.pid).children(recursive=True)
            time.sleep(0.05)
        assert workers
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            proc.stdin.close()
        assert proc.wait(timeout=30) == ExitCode.INTERRUPTED
        assert b"interrupted" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert not any(psutil.pid_exists(w.pid) and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert json.loads((tmp_path / "out" / "quick.json").read_text())["status"] == "ok"
    assert not (tmp_path / "out" / "long.json").exists()
    with DeviceLock(str(lock), timeout=0):  # released
        pass


def test_an_orphaned_worker_ends_itself_soon_after_its_deadline(test_models):
    """The agent is SIGKILLed (no chance to clean up) while its worker hangs: the worker's own alarm
    ends it shortly after job.timeout instead of never (the hang sleeps for a day)."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", str(test_models["float32"]), "--timeout", "3",
                             *QUICK], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                            env=dict(os.environ, EDGEBENCH_AGENT_TEST_FAULT="hang"))
    try:
        deadline = time.monotonic() + 30
        workers = []
        while not workers and time.monotonic() < deadline:
            workers = psutil.Process(proc.pid).children(recursive=True)
            time.sleep(0.05)
        assert workers
        proc.kill()
        proc.wait(timeout=10)
        worker = workers[0]
        assert worker.is_running()  # orphaned, still hanging: only its own watchdog can end it now
        # Raises psutil.TimeoutExpired if the watchdog did not fire. The bound is loose on purpose: this
        # is about "ends", not about how fast on a loaded machine.
        worker.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for w in workers:
            if psutil.pid_exists(w.pid):
                w.kill()


def test_a_runtime_that_fails_to_import_is_skipped_by_auto_and_reported(test_models, tmp_path):
    """A broken install (here: a package shadowing ai_edge_litert whose import raises, as a wheel built
    for another numpy does) is reported by info, refused when asked for, and skipped by auto."""
    shadow = tmp_path / "shadow" / "ai_edge_litert"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('built for another numpy (simulated)')\n")
    env = {"PYTHONPATH": str(tmp_path / "shadow")}

    info = json.loads(agent("info", "--json", env=env).stdout)
    litert = next(r for r in info["runtimes"] if r["name"] == "ai-edge-litert")
    assert litert["ok"] is False and "built for another numpy" in litert["error"]

    asked = agent("run", test_models["float32"], "--runtime", "ai-edge-litert", "--json", *QUICK, env=env)
    assert asked.returncode == ExitCode.NO_RUNTIME
    doc = json.loads(asked.stdout)
    assert doc["error"]["kind"] == "no_runtime" and "built for another numpy" in doc["error"]["message"]

    auto = agent("run", test_models["float32"], "--json", *QUICK, env=env)
    assert auto.returncode == 0, auto.stdout + auto.stderr
    assert json.loads(auto.stdout)["runtime"]["name"] == "tflite-runtime"

    # info --runtime auto (what a fleet run asks) checks in discovery order up to the first that imports.
    quick = agent("info", "--json", "--runtime", "auto", env=env)
    assert quick.returncode == 0, quick.stderr
    oks = {r["name"]: r["ok"] for r in json.loads(quick.stdout)["runtimes"]}
    assert oks == {"ai-edge-litert": False, "tflite-runtime": True, "tensorflow": None}
    only = agent("info", "--json", "--runtime", "ai-edge-litert", env=env)
    assert only.returncode == ExitCode.NO_RUNTIME
    oks = {r["name"]: r["ok"] for r in json.loads(only.stdout)["runtimes"]}
    assert oks == {"ai-edge-litert": False, "tflite-runtime": None, "tensorflow": None}
