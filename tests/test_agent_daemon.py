"""The agent daemon as a device runs it: a real process on a real Unix socket, real workers, real models.
Submit, journal, idempotent resubmit, SIGKILL + restart (nothing lost or doubled), cancel, heartbeat,
the socket's reach, and the device lock it shares with one-shot batches."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from agent.errors import ExitCode
from agent.lock import DeviceLock
from tests.fixtures_daemon import REPO, journal_files, read_json

QUICK = {"runs": 2, "min_seconds": 0, "warmup": 0, "warmup_min_seconds": 0, "timeout": 60}
LONG = {"runs": 10**6, "min_seconds": 120, "max_seconds": 120, "warmup_min_seconds": 0, "timeout": 300}


def job(model, job_id, **settings):
    return {"model": str(model), "id": job_id, **(QUICK if not settings else settings)}


def test_submitted_jobs_are_measured_in_order_and_journaled_before_they_are_reported(test_models, tmp_path,
                                                                                     agent_daemon):
    daemon = agent_daemon(tmp_path)
    jobs = [job(test_models["float32"], "a"), job(test_models["int8_io"], "b"), job(test_models["bad_truncated"], "c")]
    answer = daemon.submit(jobs)
    assert answer["accepted"] == ["a", "b", "c"] and answer["duplicate"] == []
    events = daemon.watch(["a", "b", "c"])
    assert [(e["id"], e["cursor"], e["status"]) for e in events] == [("a", 1, "ok"), ("b", 2, "ok"), ("c", 3, "error")]
    for event in events:  # the file a `done` event names is the whole, final result document
        doc = read_json(event["file"])
        assert doc["job"]["id"] == event["id"] and doc["daemon"]["cursor"] == event["cursor"]
        assert doc["daemon"]["submitted"] <= doc["daemon"]["started"] < doc["daemon"]["ended"] <= \
            doc["daemon"]["journaled"]
    assert read_json(events[0]["file"])["timing"]["count"] >= 2
    assert read_json(events[2]["file"])["error"]["kind"] == "not_a_model"
    # one job at a time: each worker ended before the next started
    windows = [(read_json(e["file"])["daemon"]["started"], read_json(e["file"])["daemon"]["ended"]) for e in events]
    assert all(end <= start for (_, end), (start, _) in zip(windows, windows[1:]))
    result = daemon.client("result", "b")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["document"]["status"] == "ok"
    by_prefix = daemon.client("watch", "--prefix", "b")  # every known job whose id starts with "b"
    assert [json.loads(line).get("id") for line in by_prefix.stdout.splitlines()] == ["b", None]
    since = json.loads(daemon.client("result", "--since", "1").stdout)
    assert [row["id"] for row in since["finished"]] == ["b", "c"] and since["cursor"] == 3
    assert [p.name for p in journal_files(tmp_path)] == ["00000001.a.json", "00000002.b.json", "00000003.c.json"]
    assert not list((tmp_path / "daemon" / "jobs").iterdir()) and not list((tmp_path / "daemon" / "running").iterdir())


def test_a_resubmitted_job_is_not_measured_twice_and_a_conflicting_one_is_refused(test_models, tmp_path,
                                                                                   agent_daemon):
    daemon = agent_daemon(tmp_path)
    jobs = [job(test_models["float32"], "a"), job(test_models["float32"], "b")]
    assert daemon.submit(jobs)["accepted"] == ["a", "b"]
    again = daemon.submit(jobs)  # e.g. the controller resubmits after its link dropped
    assert again["accepted"] == [] and again["duplicate"] == ["a", "b"]
    daemon.watch(["a", "b"])
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(jobs + [job(test_models["int8_io"], "c")]))
    after = json.loads(daemon.client("submit", jobs_file).stdout)
    assert after["accepted"] == ["c"] and after["duplicate"] == ["a", "b"]
    daemon.watch(["c"])
    assert len(journal_files(tmp_path)) == 3

    conflict = tmp_path / "conflict.json"
    conflict.write_text(json.dumps([job(test_models["int8_io"], "d"), dict(job(test_models["float32"], "a"),
                                                                           threads=2)]))
    refused = daemon.client("submit", conflict)
    assert refused.returncode == ExitCode.USAGE
    assert "'a' is already known with different settings" in refused.stderr and "nothing was queued" in refused.stderr
    assert daemon.status()["queued"] == [] and daemon.client("result", "d").returncode == ExitCode.USAGE
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"model": "x.tflite", "id": "a/b"}]))
    assert daemon.client("submit", bad).returncode == ExitCode.USAGE


@pytest.mark.slow
def test_a_sigkilled_daemon_restarts_without_losing_or_doubling_a_result(test_models, tmp_path, agent_daemon):
    """SIGKILL while job `long` measures: `quick` (finished before) keeps its one journal entry, `long` is
    journaled crashed (daemon_died) and not re-run, `after` (never started) runs after the restart. The
    orphaned worker keeps the device lock until the restarted daemon kills it."""
    lock = tmp_path / "lock"
    daemon = agent_daemon(tmp_path, lock=lock)
    daemon.submit([job(test_models["float32"], "quick"), job(test_models["bench_medium"], "long", **LONG),
                   job(test_models["int8_io"], "after")])
    daemon.watch(["quick"])
    worker_pid = daemon.wait_running("long")["running"]["worker_pid"]
    quick_file = journal_files(tmp_path)[0]
    quick_bytes = quick_file.read_bytes()
    daemon.sigkill()

    worker = psutil.Process(worker_pid)
    assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE  # orphaned, still measuring
    with pytest.raises(Exception, match="held by"):  # ... and still holding the device lock
        DeviceLock(str(lock), timeout=0).acquire()

    restarted = agent_daemon(tmp_path, lock=lock)
    events = restarted.watch(["quick", "long", "after"])
    assert [(e["id"], e["status"]) for e in events] == [("quick", "ok"), ("long", "crashed"), ("after", "ok")]
    long_doc = read_json(events[1]["file"])
    assert long_doc["error"]["kind"] == "daemon_died" and "not re-run" in long_doc["error"]["message"]
    assert long_doc["job"]["id"] == "long" and long_doc["daemon"]["started"] is not None
    assert not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE
    assert quick_file.read_bytes() == quick_bytes  # untouched
    names = [p.name for p in journal_files(tmp_path)]
    assert names == ["00000001.quick.json", "00000002.long.json", "00000003.after.json"]
    assert not list((tmp_path / "daemon" / "scratch").iterdir())  # the orphan's scratch is cleaned up

    # a resubmit after all this changes nothing; a second restart recovers nothing more
    assert restarted.submit([job(test_models["float32"], "quick")])["duplicate"] == ["quick"]
    restarted.sigkill()
    third = agent_daemon(tmp_path, lock=lock)
    assert third.status()["cursor"] == 3 and third.status()["queued"] == []
    assert [p.name for p in journal_files(tmp_path)] == names


@pytest.mark.parametrize("how", ["stop", "sigterm"])
def test_stop_leaves_the_interrupted_job_queued_and_a_restart_runs_it(test_models, tmp_path, agent_daemon, how):
    """`daemon-client stop`, or SIGTERM as systemd sends it."""
    daemon = agent_daemon(tmp_path)
    daemon.submit([job(test_models["bench_medium"], "long", **LONG)])
    worker_pid = daemon.wait_running("long")["running"]["worker_pid"]
    if how == "stop":
        assert daemon.stop() == 0
    else:
        daemon.proc.terminate()
        assert daemon.proc.wait(timeout=60) == 0
    assert not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE
    assert journal_files(tmp_path) == [] and (tmp_path / "daemon" / "jobs" / "long.json").exists()
    assert not (tmp_path / "daemon" / "daemon.sock").exists()
    restarted = agent_daemon(tmp_path)
    assert restarted.wait_running("long")["running"]["id"] == "long"


def test_a_second_daemon_on_one_workdir_is_refused(tmp_path, agent_daemon):
    first = agent_daemon(tmp_path)
    second = subprocess.run([sys.executable, "-m", "agent", "daemon", "--workdir", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == ExitCode.BUSY
    assert f"another agent daemon (pid {first.proc.pid})" in second.stderr
    assert first.status()["daemon"]["pid"] == first.proc.pid  # the first one is unharmed
    detach = subprocess.run([sys.executable, "-m", "agent", "daemon", "--detach", "--workdir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert detach.returncode == 0 and json.loads(detach.stdout)["started"] is False


def test_detach_starts_a_daemon_that_survives_its_starter(tmp_path):
    detach = subprocess.run([sys.executable, "-m", "agent", "daemon", "--detach", "--workdir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert detach.returncode == 0, detach.stderr
    status = json.loads(detach.stdout)
    pid = status["daemon"]["pid"]
    try:
        assert status["started"] is True and psutil.pid_exists(pid)
        assert psutil.Process(pid).ppid() != os.getpid()  # not our child: a session of its own
    finally:
        stop = subprocess.run([sys.executable, "-m", "agent", "daemon-client", "--workdir", str(tmp_path), "stop"],
                              cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert stop.returncode == 0
        psutil.Process(pid).wait(timeout=30) if psutil.pid_exists(pid) else None
    gone = subprocess.run([sys.executable, "-m", "agent", "daemon-client", "--workdir", str(tmp_path), "status"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert gone.returncode == ExitCode.NO_DAEMON and "no agent daemon is running" in gone.stderr


def test_cancel_a_queued_and_a_running_job(test_models, tmp_path, agent_daemon):
    daemon = agent_daemon(tmp_path)
    daemon.submit([job(test_models["bench_medium"], "long", **LONG), job(test_models["float32"], "queued"),
                   job(test_models["float32"], "last")])
    worker_pid = daemon.wait_running("long")["running"]["worker_pid"]
    queued = json.loads(daemon.client("cancel", "queued").stdout)
    assert queued == {"id": "queued", "state": "finished", "cancelled": True}
    running = json.loads(daemon.client("cancel", "long").stdout)
    assert running == {"id": "long", "state": "finished", "cancelled": True}
    assert not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE
    events = daemon.watch(["long", "queued", "last"])
    assert sorted((e["id"], e["status"]) for e in events) == [("last", "ok"), ("long", "error"), ("queued", "error")]
    for job_id, started in (("queued", False), ("long", True)):
        doc = json.loads(daemon.client("result", job_id).stdout)["document"]
        assert doc["error"]["kind"] == "cancelled" and (doc["daemon"]["started"] is not None) == started
    again = json.loads(daemon.client("cancel", "last").stdout)
    assert again["cancelled"] is False and again["state"] == "finished"
    assert daemon.client("cancel", "nope").returncode == ExitCode.USAGE


def test_status_reports_a_heartbeat_the_running_job_and_the_queue(test_models, tmp_path, agent_daemon):
    daemon = agent_daemon(tmp_path)
    first = daemon.status()["heartbeat"]
    daemon.submit([job(test_models["bench_medium"], "long", **LONG), job(test_models["float32"], "q1"),
                   job(test_models["float32"], "q2")])
    status = daemon.wait_running("long")
    beat = status["heartbeat"]
    assert status["queued"] == ["q1", "q2"] and beat["queue_length"] == 2
    assert status["running"]["id"] == "long" and status["running"]["started"] > first["time"] - 1
    assert beat["uptime_s"] > first["uptime_s"] >= 0
    assert len(beat["loadavg"]) == 3 and all(isinstance(x, float) for x in beat["loadavg"])
    assert beat["temp_c"] is None or isinstance(beat["temp_c"], float)
    assert status["daemon"]["pid"] == daemon.proc.pid and status["daemon"]["workdir"] == str(tmp_path)
    cli = daemon.client("status")
    assert cli.returncode == 0 and json.loads(cli.stdout)["running"]["id"] == "long"


def test_the_socket_is_0600_in_a_0700_folder_and_nothing_listens_on_the_network(tmp_path, agent_daemon):
    daemon = agent_daemon(tmp_path)
    sock = tmp_path / "daemon" / "daemon.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "daemon").stat().st_mode) == 0o700
    proc = psutil.Process(daemon.proc.pid)
    assert proc.net_connections(kind="inet") == []
    assert [c.laddr for c in proc.net_connections(kind="unix") if c.laddr] == [str(sock)]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to act as another uid")
def test_another_user_cannot_reach_the_daemon(agent_daemon):
    """Two gates: the socket's mode (0600) and, should it be opened up, the peer's uid (SO_PEERCRED)."""
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="edgebench-daemon-uid-", dir="/tmp"))  # pytest's tmp is 0700
    try:
        os.chmod(workdir, 0o755)
        daemon = agent_daemon(workdir)
        code = ("import sys, json; sys.path.insert(0, sys.argv[1]); from agent import daemon_client as d\n"
                "try: print(json.dumps(d.request(sys.argv[2], {'op': 'status'})))\n"
                "except Exception as e: print(type(e).__name__, e)")
        as_nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable, "-c",
                     code, str(REPO), str(workdir)]
        os.chmod(workdir / "daemon", 0o755)  # let nobody reach the socket file itself
        denied = subprocess.run(as_nobody, capture_output=True, text=True, timeout=60, check=False)
        assert "belongs to another user" in denied.stdout, denied.stdout + denied.stderr
        os.chmod(workdir / "daemon" / "daemon.sock", 0o666)  # even an opened-up socket answers only its user
        refused = subprocess.run(as_nobody, capture_output=True, text=True, timeout=60, check=False)
        assert "uid 65534 may not use this daemon" in refused.stdout, refused.stdout + refused.stderr
        assert daemon.status()["daemon"]["pid"] == daemon.proc.pid
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_daemon_and_one_shot_batches_never_measure_at_once(test_models, tmp_path, agent_daemon):
    """One device lock: the daemon's jobs (submitted by two clients at once) and a one-shot `agent batch`
    interleave, but no two measuring windows overlap (checked from the recorded timestamps)."""
    lock = tmp_path / "lock"
    (tmp_path / "w").mkdir()
    daemon = agent_daemon(tmp_path / "w", lock=lock)
    slow = {"runs": 2, "min_seconds": 0.4, "warmup": 0, "warmup_min_seconds": 0, "timeout": 60}
    batch_jobs = tmp_path / "batch.json"
    batch_jobs.write_text(json.dumps([job(test_models["float32"], f"b{i}", **slow) for i in range(3)]))
    batch = subprocess.Popen([sys.executable, "-m", "agent", "batch", str(batch_jobs), "--out", str(tmp_path / "out"),
                              "--lock", str(lock), "--lock-timeout", "120"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    clients = [threading.Thread(target=daemon.submit, args=([job(test_models["float32"], f"{c}{i}", **slow)
                                                              for i in range(2)],)) for c in "xy"]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=60)
    events = daemon.watch(["x0", "x1", "y0", "y1"])
    out, err = batch.communicate(timeout=120)
    assert batch.returncode == 0, err
    windows = []
    starts = {}
    for line in out.splitlines():
        event = json.loads(line)
        if event["event"] == "start":
            starts[event["id"]] = event["time"]
        else:
            windows.append((starts[event["id"]], event["time"], "batch " + event["id"]))
    for event in events:
        times = read_json(event["file"])["daemon"]
        windows.append((times["started"], times["ended"], "daemon " + event["id"]))
    windows.sort()
    assert len(windows) == 7
    overlaps = [(a, b) for a, b in zip(windows, windows[1:]) if b[0] < a[1]]
    assert overlaps == []


def test_the_daemon_waits_for_a_held_device_lock_and_says_who_holds_it(test_models, tmp_path, agent_daemon):
    lock = tmp_path / "lock"
    daemon = agent_daemon(tmp_path, lock=lock)
    with DeviceLock(str(lock), timeout=0):
        daemon.submit([job(test_models["float32"], "a")])
        deadline = time.monotonic() + 30
        while not daemon.status()["waiting_for_lock"] and time.monotonic() < deadline:
            time.sleep(0.05)
        status = daemon.status()
        assert f"held by pid {os.getpid()}" in status["waiting_for_lock"]
        assert status["running"]["id"] == "a" and status["running"]["worker_pid"] is None  # not measuring
        assert journal_files(tmp_path) == []
    assert [e["status"] for e in daemon.watch(["a"])] == ["ok"]


@pytest.mark.slow
def test_the_zipapp_daemon_runs_on_a_bare_device_python(agent_pyz, agent_venv_python, test_models, tmp_path):
    """As a fleet device runs it: `python3 edgebench-agent.pyz daemon --detach`, numpy + ai-edge-litert only."""
    def pyz(*args):
        return subprocess.run([str(agent_venv_python), str(agent_pyz), *map(str, args)], capture_output=True,
                              text=True, timeout=120, check=False, cwd=tmp_path)

    started = pyz("daemon", "--detach", "--workdir", tmp_path / "w")
    assert started.returncode == 0, started.stderr
    status = json.loads(started.stdout)
    try:
        assert status["started"] is True and status["daemon"]["agent"] == str(agent_pyz)
        (tmp_path / "jobs.json").write_text(json.dumps([job(test_models["int8_io"], "z")]))
        assert json.loads(pyz("daemon-client", "--workdir", tmp_path / "w", "submit", "jobs.json").stdout)[
            "accepted"] == ["z"]
        watch = pyz("daemon-client", "--workdir", tmp_path / "w", "watch", "--ids", "z")
        assert watch.returncode == 0, watch.stderr
        lines = [json.loads(line) for line in watch.stdout.splitlines()]
        done = [e for e in lines if e["event"] == "done"]
        assert [e["status"] for e in done] == ["ok"] and lines[-1]["complete"] is True
        assert read_json(done[0]["file"])["worker"]["python"] == str(agent_venv_python)
    finally:
        assert pyz("daemon-client", "--workdir", tmp_path / "w", "stop").returncode == 0
        pid = status["daemon"]["pid"]
        if psutil.pid_exists(pid):
            psutil.Process(pid).wait(timeout=30)


@pytest.mark.parametrize("request_, needle", [
    ({"op": "bogus"}, "unknown request op 'bogus'"),
    ({"op": "watch", "heartbeat": "often"}, "'heartbeat' (seconds > 0)"),
    ({"op": "watch", "heartbeat": -1}, "'heartbeat' (seconds > 0)"),
    ({"op": "watch", "ids": "a,b"}, "'ids' (a list)"),
    ({"op": "watch", "ids": ["nope"]}, "no job(s) ['nope']"),
    ({"op": "submit", "jobs": {"model": "x"}}, "a list of job objects"),
    ({"op": "submit", "jobs": [{"model": "x", "id": "a", "threads": 0}]}, "job #0: threads"),
    ({"op": "result"}, "'id' or 'since'"),
    ({"op": "result", "id": "nope"}, "no job 'nope'"),
])
def test_a_bad_request_is_refused_with_its_reason_and_the_daemon_lives_on(tmp_path, agent_daemon, request_,
                                                                          needle):
    from agent.errors import UsageError

    daemon = agent_daemon(tmp_path)
    with pytest.raises(UsageError, match=re.escape(needle)):
        daemon.request(request_)
    assert daemon.status()["daemon"]["pid"] == daemon.proc.pid


def test_garbage_on_the_socket_is_refused_and_the_daemon_lives_on(tmp_path, agent_daemon):
    import socket

    daemon = agent_daemon(tmp_path)
    for garbage in (b"not json\n", b"[1, 2]\n", b"\xff\xfe\n"):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(tmp_path / "daemon" / "daemon.sock"))
            sock.sendall(garbage)
            answer = json.loads(sock.makefile("rb").readline())
        assert answer["error"]["kind"] == "usage", answer
    assert daemon.status()["daemon"]["pid"] == daemon.proc.pid
