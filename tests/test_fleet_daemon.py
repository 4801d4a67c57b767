"""Fleet runs through the agent daemon (`daemon: true`): the devices.yaml key, runs over real sshd, a
link cut mid-run, the daemon SIGKILLed mid-run, two controllers on one device, `--resume`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from agent import daemon_client
from agent.errors import AgentError
from controller.errors import ConfigError
from controller.fleet.inventory import load
from tests.fixtures_fleet import REPO, device_entry, write_inventory


def write(tmp_path, text):
    path = tmp_path / "devices.yaml"
    path.write_text(text)
    return str(path)


def test_the_daemon_key_is_a_validated_boolean(tmp_path):
    inv = load(write(tmp_path, "defaults:\n  daemon: true\ndevices:\n  - name: a\n  - name: b\n    daemon: false\n"))
    assert [d.daemon for d in inv.devices] == [True, False]
    assert load(write(tmp_path, "devices:\n  - name: a\n")).devices[0].daemon is False
    for bad in ("yes please", "1", "[true]"):
        with pytest.raises(ConfigError, match=r"device 'a': key 'daemon' must be true or false"):
            load(write(tmp_path, f"devices:\n  - name: a\n    daemon: {bad}\n"))
    with pytest.raises(ConfigError, match="'port' must be an integer"):  # other keys still refuse booleans
        load(write(tmp_path, "devices:\n  - name: a\n    port: true\n"))


# ---- runs over real sshd ------------------------------------------------------------------------------

FAST = ["--runs", "3", "--warmup", "0", "--min-seconds", "0", "--warmup-min-seconds", "0"]
#: each job measures ~0.6 s, so a run of 4 jobs lasts long enough to cut its link in the middle
STEADY = ["--runs", "1", "--warmup", "0", "--min-seconds", "0.6", "--warmup-min-seconds", "0"]


def run_json(*argv: str) -> tuple[int, dict]:
    from controller.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", *argv, "--json"])
    return code, json.loads(out.getvalue())


def journal(workdir: Path) -> list:
    return sorted(p.name for p in (Path(workdir) / "daemon" / "journal").glob("*.json"))


def journaled(workdir: Path) -> int:
    """How many results the device's daemon ever journaled (its cursor; also counts forgotten entries)."""
    return daemon_client.request(str(workdir), {"op": "status"}, timeout=10)["cursor"]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def daemon_pid(workdir: Path) -> int | None:
    try:
        return daemon_client.request(str(workdir), {"op": "status"}, timeout=10)["daemon"]["pid"]
    except AgentError:
        return None


@pytest.fixture
def daemon_fleet(sshd_factory, ssh_key, tmp_path):
    """Three loopback SSH devices with `daemon: true` (own sshd each); their daemons (started by the runs,
    through SSH) are stopped at teardown, by the pid each reports."""
    servers = [sshd_factory.start(f"dd-{i}") for i in range(3)]
    known = tmp_path / "known_hosts"
    known.write_text("".join(s.host_key_line for s in servers))
    workdirs = {s.name: tmp_path / f"w{i}" for i, s in enumerate(servers)}
    entries = [device_entry(s, ssh_key, known, workdirs[s.name], daemon=True) for s in servers]
    fleet = {"servers": {s.name: s for s in servers}, "workdirs": workdirs,
             "inventory": write_inventory(tmp_path / "devices.yaml", entries), "entries": entries}
    yield fleet
    for workdir in workdirs.values():
        stop_daemon(workdir)
    for server in servers:
        server.stop()


def stop_daemon(workdir: Path) -> None:
    """Stop the daemon of ``workdir`` (started by a run of this test): ask it; if it does not answer, end
    the pid its pid file names — only when that process is a daemon of this very workdir."""
    pid = daemon_pid(workdir)
    if pid is not None:
        with contextlib.suppress(AgentError):
            daemon_client.request(str(workdir), {"op": "stop"}, timeout=10)
    else:
        try:
            pid = int((Path(workdir) / "daemon" / "daemon.pid").read_text().strip())
            if str(workdir) not in " ".join(psutil.Process(pid).cmdline()):
                return
            psutil.Process(pid).terminate()
        except (OSError, ValueError, psutil.NoSuchProcess):
            return
    with contextlib.suppress(psutil.NoSuchProcess):
        try:
            psutil.Process(pid).wait(timeout=30)
        except psutil.TimeoutExpired:
            psutil.Process(pid).kill()


def session_processes(server) -> list:
    """The sshd processes serving sessions of ``server`` (children of the sshd this test suite started)."""
    return [p for p in psutil.Process(server.proc.pid).children(recursive=True)
            if p.name().startswith("sshd")]


def rows_by_device(doc: dict) -> dict:
    rows: dict = {}
    for row in doc["results"]:
        rows.setdefault(row["device"], []).append(row)
    return rows


def test_a_daemon_device_runs_its_jobs_through_the_daemon(daemon_fleet, test_models, tmp_path):
    import numpy as np

    models = [str(test_models["float32"]), str(test_models["int8_io"])]
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "eval.npz", x=rng.uniform(0, 1, (4, 8, 8, 1)).astype(np.float32),
             y=np.array([0, 1, 2, 3]))
    code, doc = run_json(*models, "--devices", str(daemon_fleet["inventory"]), "--device", "dd-0",
                         "--out", str(tmp_path / "out"), "--eval", str(tmp_path / "eval.npz"), *FAST)
    assert code == 0, doc
    assert all(isinstance(r["top1"], float) for r in doc["results"])  # outputs came home through the daemon
    assert len(list((Path(doc["run_dir"]) / "outputs" / "dd-0").glob("*.npz"))) == 2
    workdir = daemon_fleet["workdirs"]["dd-0"]
    run_id = doc["run_id"]
    assert journaled(workdir) == 2 and journal(workdir) == []  # measured once each, forgotten once home
    rows = rows_by_device(doc)["dd-0"]
    assert sorted(r["status"] for r in rows) == ["ok", "ok"]
    stored = json.loads(next((Path(doc["run_dir"]) / "results" / "dd-0").glob("*.json")).read_text())
    assert stored["daemon"]["job_id"] == f"{run_id}.{stored['job']['id']}"  # the run's own id in job.id
    device = json.loads((Path(doc["run_dir"]) / "run.json").read_text())["devices"]["dd-0"]
    assert device["reconnects"] == [] and device["daemon"]["pid"] == daemon_pid(workdir)
    # a second run reuses the running daemon
    code, again = run_json(models[0], "--devices", str(daemon_fleet["inventory"]), "--device", "dd-0",
                           "--out", str(tmp_path / "out"), *FAST)
    assert code == 0
    info = json.loads((Path(again["run_dir"]) / "run.json").read_text())["devices"]["dd-0"]["daemon"]
    assert info["started"] is False and info["pid"] == device["daemon"]["pid"]

    # devices --check shows the heartbeat of a running daemon, and says when one is not running
    from controller.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["devices", "--check", "--json", "--devices", str(daemon_fleet["inventory"]), "--device", "dd-0",
                     "--device", "dd-1"])
    assert code == 0
    checks = {row["name"]: row["check"]["daemon"] for row in json.loads(out.getvalue())}
    assert checks["dd-0"]["running"] is True and checks["dd-0"]["pid"] == info["pid"]
    assert checks["dd-0"]["queue_length"] == 0 and checks["dd-0"]["uptime_s"] > 0
    assert len(checks["dd-0"]["loadavg"]) == 3
    assert checks["dd-1"] == {"running": False, "reason": "not running (the next run with daemon: true starts it)"}
    assert daemon_pid(daemon_fleet["workdirs"]["dd-1"]) is None  # --check never starts one


@pytest.mark.slow
def test_a_link_cut_mid_run_loses_and_doubles_nothing(daemon_fleet, test_models, tmp_path):
    """dd-1's SSH sessions are killed while its jobs measure (the sshd children serving it, not the
    listener): the jobs go on in its daemon, the run reconnects, collects every result once; dd-0 and
    dd-2 are untouched."""
    models = [str(test_models[name]) for name in ("float32", "int8_io", "two_outputs", "fp16")]
    victim, workdir = daemon_fleet["servers"]["dd-1"], daemon_fleet["workdirs"]["dd-1"]
    cut: dict = {}

    def cut_link() -> None:
        wait_for(lambda: len(journal(workdir)) >= 1, 120, "dd-1's first result")
        cut["daemon_pid"] = daemon_pid(workdir)
        cut["killed"] = [p.pid for p in session_processes(victim)]
        for pid in cut["killed"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cut["journaled_at_cut"] = len(journal(workdir))

    cutter = threading.Thread(target=cut_link, daemon=True)
    cutter.start()
    code, doc = run_json(*models, "--devices", str(daemon_fleet["inventory"]), "--out", str(tmp_path / "out"),
                         *STEADY)
    cutter.join(timeout=60)
    assert cut["killed"], "no SSH session of dd-1 was found to cut"
    assert cut["journaled_at_cut"] < 4  # the cut came in the middle of the run
    assert code == 0, doc
    rows = rows_by_device(doc)
    for name in ("dd-0", "dd-1", "dd-2"):
        assert sorted(r["job_id"] for r in rows[name]) == sorted({r["job_id"] for r in rows[name]})  # no double
        assert [r["status"] for r in rows[name]] == ["ok"] * 4, rows[name]
    assert journaled(workdir) == 4 and journal(workdir) == []  # each job measured once on the device
    assert daemon_pid(workdir) == cut["daemon_pid"]  # the same daemon went on through the cut
    devices = json.loads((Path(doc["run_dir"]) / "run.json").read_text())["devices"]
    reconnects = devices["dd-1"]["reconnects"]
    assert len(reconnects) == 1 and reconnects[0]["ok"] is True and reconnects[0]["attempts"] >= 1
    assert "lost" in reconnects[0]["reason"] or "dead" in reconnects[0]["reason"]
    assert devices["dd-0"]["reconnects"] == [] and devices["dd-2"]["reconnects"] == []


@pytest.mark.slow
def test_a_daemon_sigkilled_mid_run_is_restarted_and_its_running_job_reported_crashed(
        daemon_fleet, test_models, tmp_path):
    models = [str(test_models[name]) for name in ("float32", "int8_io", "two_outputs", "fp16")]
    workdir = daemon_fleet["workdirs"]["dd-0"]
    killed: dict = {}

    def kill_daemon() -> None:
        def running():
            try:
                status = daemon_client.request(str(workdir), {"op": "status"}, timeout=10)
            except AgentError:
                return None
            job = status["running"]
            return status if job and job["worker_pid"] and status["finished"] >= 1 else None
        status = wait_for(running, 120, "dd-0's second job to measure")
        killed.update(pid=status["daemon"]["pid"], job=status["running"]["id"])
        os.kill(killed["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_daemon, daemon=True)
    killer.start()
    code, doc = run_json(*models, "--devices", str(daemon_fleet["inventory"]), "--device", "dd-0",
                         "--device", "dd-2", "--out", str(tmp_path / "out"), *STEADY)
    killer.join(timeout=60)
    assert killed, "the daemon was never killed"
    assert code == 1, (killed, doc["results"], doc["devices"]["dd-0"])  # one job crashed
    rows = rows_by_device(doc)
    assert [r["status"] for r in rows["dd-2"]] == ["ok"] * 4
    statuses = {r["job_id"]: (r["status"], r["error_kind"]) for r in rows["dd-0"]}
    crashed_id = killed["job"].split(".", 1)[1]
    assert statuses.pop(crashed_id) == ("crashed", "daemon_died")
    assert list(statuses.values()) == [("ok", None)] * 3 and len(rows["dd-0"]) == 4
    assert journaled(workdir) == 4
    new_pid = daemon_pid(workdir)
    assert new_pid and new_pid != killed["pid"]
    device = json.loads((Path(doc["run_dir"]) / "run.json").read_text())["devices"]["dd-0"]
    assert [r["reason"] for r in device["reconnects"]] == ["the agent daemon stopped during the run"]


@pytest.mark.slow
def test_two_controllers_on_one_daemon_device_never_measure_at_once(daemon_fleet, test_models, tmp_path):
    """Two `edgebench run` processes at once on the same daemon device: both complete, and the measuring
    windows the device recorded (daemon.started / daemon.ended of every job) do not overlap."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    argv = [sys.executable, "-m", "controller", "run", str(test_models["float32"]), str(test_models["int8_io"]),
            "--devices", str(daemon_fleet["inventory"]), "--device", "dd-2", "--json", *STEADY]
    procs = [subprocess.Popen(argv + ["--out", str(tmp_path / f"out{i}")], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    docs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        doc = json.loads(out)
        assert proc.returncode == 0, (err[-2000:], [(r["status"], r["error"]) for r in doc["results"]],
                                      {n: d.get("reason") for n, d in doc["devices"].items()})
        docs.append(doc)
    assert docs[0]["run_id"] != docs[1]["run_id"]
    windows = []
    for doc in docs:
        for path in (Path(doc["run_dir"]) / "results" / "dd-2").glob("*.json"):
            result = json.loads(path.read_text())
            assert result["status"] == "ok"
            windows.append((result["daemon"]["started"], result["daemon"]["ended"], doc["run_id"]))
    windows.sort()
    assert len(windows) == 4
    assert [(a, b) for a, b in zip(windows, windows[1:]) if b[0] < a[1]] == []
    assert journaled(daemon_fleet["workdirs"]["dd-2"]) == 4


def test_the_devices_table_says_the_heartbeat_in_words():
    from controller.fleet.view import _daemon_cell

    assert _daemon_cell(None) == "-"
    assert _daemon_cell({"running": False, "reason": "not running"}) == "[yellow]not running[/]"
    beat = {"running": True, "uptime_s": 5400, "queue_length": 2, "job": "r.000-m-t1", "temp_c": 47.4,
            "loadavg": [0.5, 0.4, 0.3]}
    assert _daemon_cell(beat) == "up 1.5 h, queue 2, running r.000-m-t1, 47 °C, load 0.50"


@pytest.mark.slow
def test_bootstrap_daemon_writes_the_user_unit_and_starts_the_daemon_where_systemd_is_absent(
        tmp_path, monkeypatch, capsys):
    """This box has no systemd user session: the unit is written where systemd would read it
    ($XDG_CONFIG_HOME/systemd/user), printed, and the daemon started for now; `current.pyz` is the build."""
    from controller.cli import main
    from controller.fleet.daemon_unit import UNIT_NAME

    wheels = REPO / "wheels"
    assert any(wheels.glob("ai_edge_litert-*.whl")), "run `make wheels/.stamp` (make test does) first"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    workdir = tmp_path / "board"
    inventory = write_inventory(tmp_path / "devices.yaml", [{"name": "board", "transport": "local",
                                                             "workdir": str(workdir), "daemon": True}])
    try:
        code = main(["bootstrap", "--devices", str(inventory), "--wheels", str(wheels), "--daemon"])
        printed = capsys.readouterr().out
        assert code == 0, printed
        unit_path = tmp_path / "config" / "systemd" / "user" / UNIT_NAME
        unit = unit_path.read_text()
        venv_python = workdir / "venv" / "bin" / "python"
        assert f"ExecStart={venv_python} {workdir}/agent/current.pyz daemon --workdir {workdir}\n" in unit
        assert "Restart=always" in unit and "RestartPreventExitStatus=4" in unit
        assert "systemd cannot be used here" in printed and "ExecStart=" in printed
        status = daemon_client.request(str(workdir), {"op": "status"})
        current = workdir / "agent" / "current.pyz"
        assert current.is_symlink() and status["daemon"]["agent_real"] == os.path.realpath(current)
        assert psutil.Process(status["daemon"]["pid"]).exe() == os.path.realpath(venv_python)
    finally:
        pid = daemon_pid(workdir)
        if pid:
            daemon_client.request(str(workdir), {"op": "stop"})
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).wait(timeout=30)


@pytest.mark.slow
def test_a_device_unreachable_past_its_reconnects_is_collected_later_from_the_journal(
        daemon_fleet, sshd_factory, test_models, tmp_path):
    """dd-1's sshd is stopped mid-run and its sessions cut: two reconnects fail, the device fails naming
    `--resume`, its jobs go on in the daemon; once sshd is back, the journal gives every result once."""
    from agent.job import JobSpec
    from controller.fleet.agent_build import agent_zipapp
    from controller.fleet.daemon import collect_journal
    from controller.fleet.inventory import load as load_inventory
    from controller.fleet.models import collect_models
    from controller.fleet.run import RunOptions, execute
    from controller.fleet.session import DeviceSession

    models = collect_models([str(test_models[n]) for n in ("float32", "int8_io", "two_outputs", "fp16")])
    options = RunOptions(job=JobSpec(model="", runs=1, warmup=0, min_seconds=0.6, warmup_min_seconds=0),
                         out_dir=str(tmp_path / "out"), agent_pyz=agent_zipapp(), reconnect_attempts=2,
                         reconnect_backoff=0.2)
    devices = load_inventory(str(daemon_fleet["inventory"])).select(["dd-0", "dd-1"])
    victim, workdir = daemon_fleet["servers"]["dd-1"], daemon_fleet["workdirs"]["dd-1"]

    def cut() -> None:
        wait_for(lambda: len(journal(workdir)) >= 1, 120, "dd-1's first result")
        sessions = session_processes(victim)
        victim.stop()  # the listener (ours, by pid): reconnects are refused
        for process in sessions:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    cutter = threading.Thread(target=cut, daemon=True)
    cutter.start()
    store, result = execute(devices, models, options, str(daemon_fleet["inventory"]))
    cutter.join(timeout=60)
    status = result.devices["dd-1"]
    assert status.failed and status.kind == "unreachable"
    assert f"--resume {store.run_id}" in status.reason and "2 reconnects failed" in status.reason
    assert [r["ok"] for r in status.reconnects] == [False] and status.reconnects[0]["attempts"] == 2
    assert result.devices["dd-0"].state == "done"

    victim.start(sshd_factory.authorized_keys)  # the board is back (same port, same host key)
    session = DeviceSession(devices[1], options.agent_pyz)
    try:
        session.open()
        jobs, docs = collect_journal(session, store.run_id, lock_timeout=60)
    finally:
        session.close()
    assert sorted(j["id"] for j in jobs) == sorted(docs) and len(docs) == 4
    assert all(doc["status"] == "ok" and doc["daemon"]["job_id"].startswith(store.run_id) for doc in docs.values())
    assert len(journal(workdir)) == 4  # measured once each, the jobs after the cut too


def test_an_ansible_inventory_sets_daemon_with_edgebench_daemon(tmp_path):
    from controller.fleet.ansible import load_ansible

    ini = tmp_path / "lab.ini"
    ini.write_text("[boards]\nrpi ansible_host=10.0.0.2 edgebench_daemon=true\njetson edgebench_daemon=no\n"
                   "odd edgebench_daemon=maybe\n")
    with pytest.raises(ConfigError, match=r"'odd'.*'daemon' must be true or false"):
        load_ansible(str(ini))
    ini.write_text("[boards]\nrpi ansible_host=10.0.0.2 edgebench_daemon=true\njetson edgebench_daemon=no\n")
    assert {d.name: d.daemon for d in load_ansible(str(ini)).devices} == {"rpi": True, "jetson": False}


@pytest.mark.slow
def test_a_controller_killed_mid_run_loses_nothing_on_a_daemon_device(daemon_fleet, test_models, tmp_path):
    """SIGKILL of the controller (ours, by pid) while dd-0 measures: the daemon goes on with the run's jobs
    (nothing stops them, unlike a one-shot batch), and the journal later gives each result once."""
    from controller.fleet.agent_build import agent_zipapp
    from controller.fleet.daemon import collect_journal
    from controller.fleet.inventory import load as load_inventory
    from controller.fleet.session import DeviceSession

    workdir = daemon_fleet["workdirs"]["dd-0"]
    models = [str(test_models[n]) for n in ("float32", "int8_io", "two_outputs", "fp16")]
    controller = subprocess.Popen([sys.executable, "-m", "controller", "run", *models, "--devices",
                                   str(daemon_fleet["inventory"]), "--device", "dd-0", "--out", str(tmp_path / "out"),
                                   "--json", *STEADY], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(journal(workdir)) >= 1, 120, "dd-0's first result")
        pid = daemon_pid(workdir)
        controller.kill()
        controller.wait(timeout=30)
    finally:
        if controller.poll() is None:
            controller.kill()
            controller.wait(timeout=30)
    assert len(journal(workdir)) < 4  # killed in the middle
    (run_dir,) = [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]  # not .history/
    device = load_inventory(str(daemon_fleet["inventory"])).get("dd-0")
    session = DeviceSession(device, agent_zipapp())
    try:
        session.open()
        jobs, docs = collect_journal(session, run_dir.name, lock_timeout=60)
    finally:
        session.close()
    assert len(jobs) == 4 and sorted(docs) == sorted(j["id"] for j in jobs)
    assert [d["status"] for d in docs.values()] == ["ok"] * 4
    assert len(journal(workdir)) == 4 and daemon_pid(workdir) == pid


@pytest.mark.slow
def test_ctrl_c_on_a_daemon_run_does_not_reconnect_and_the_jobs_go_on(daemon_fleet, test_models, tmp_path):
    """SIGINT to `edgebench run` while dd-0 measures: exit 130 at once (no reconnect loop), the device is
    `interrupted` naming --resume, and the daemon finishes the run's jobs anyway."""
    workdir = daemon_fleet["workdirs"]["dd-0"]
    models = [str(test_models[n]) for n in ("float32", "int8_io", "two_outputs", "fp16")]
    controller = subprocess.Popen([sys.executable, "-m", "controller", "run", *models, "--devices",
                                   str(daemon_fleet["inventory"]), "--device", "dd-0", "--out", str(tmp_path / "out"),
                                   "--json", *STEADY], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(journal(workdir)) >= 1, 120, "dd-0's first result")
        controller.send_signal(signal.SIGINT)
        start = time.monotonic()
        controller.communicate(timeout=60)
        assert controller.returncode == 130
        assert time.monotonic() - start < 20  # no reconnect attempts (they would pause 1 + 2 + 4 + ... s)
    finally:
        if controller.poll() is None:
            controller.kill()
            controller.wait(timeout=30)
    (run_dir,) = [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]  # not .history/
    device = json.loads((run_dir / "run.json").read_text())["devices"]["dd-0"]
    assert device["reconnects"] == [] and device["kind"] == "interrupted"  # recorded, not lost mid-reconnect
    assert f"--resume {run_dir.name}" in device["reason"]
    wait_for(lambda: journaled(workdir) == 4, 120, "the daemon to finish the run's jobs")
    status = daemon_client.request(str(workdir), {"op": "status"})
    assert status["queued"] == [] and status["running"] is None


def test_two_controllers_creating_the_same_workdir_at_once_both_succeed(daemon_fleet, tmp_path):
    """SFTP mkdir of a folder another controller made a moment earlier says only "Failure": the transport
    must look again rather than fail the device (seen once with two controllers on one fresh device)."""
    from controller.fleet.inventory import load as load_inventory
    from controller.fleet.transport import open_transport

    device = load_inventory(str(daemon_fleet["inventory"])).get("dd-1")
    target = tmp_path / "race" / "a" / "b" / "c"
    errors: list = []
    barrier = threading.Barrier(6)

    def make() -> None:
        transport = open_transport(device)
        try:
            barrier.wait(timeout=60)
            transport.makedirs(str(target))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            transport.close()

    threads = [threading.Thread(target=make) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and target.is_dir()


@pytest.mark.slow
def test_sshd_stopped_and_restarted_mid_run_loses_and_doubles_nothing(daemon_fleet, sshd_factory, test_models,
                                                                      tmp_path):
    """dd-2's sshd is stopped (listener and sessions: the link drops and reconnects are refused) and
    started again on the same port and host key a few seconds later: the jobs went on in its daemon, the
    run's bounded reconnect loop gets back in, collects each result once; dd-0 and dd-1 are untouched."""
    models = [str(test_models[name]) for name in ("float32", "int8_io", "two_outputs", "fp16")]
    victim, workdir = daemon_fleet["servers"]["dd-2"], daemon_fleet["workdirs"]["dd-2"]
    events: dict = {}

    def restart_sshd() -> None:
        wait_for(lambda: len(journal(workdir)) >= 1, 120, "dd-2's first result")
        sessions = session_processes(victim)
        victim.stop()  # the listener, by the PID this suite started
        for proc in sessions:  # and the sessions it served: the controller's link drops
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        events["down_at"] = time.monotonic()
        time.sleep(3)  # reconnect attempts meanwhile are refused
        victim.start(sshd_factory.authorized_keys)
        events["up_at"], events["port_kept"] = time.monotonic(), victim.port

    port = victim.port
    restarter = threading.Thread(target=restart_sshd, daemon=True)
    restarter.start()
    code, doc = run_json(*models, "--devices", str(daemon_fleet["inventory"]), "--out", str(tmp_path / "out"),
                         *STEADY)
    restarter.join(timeout=60)
    assert events.get("port_kept") == port, events
    assert code == 0, doc
    rows = rows_by_device(doc)
    for name in ("dd-0", "dd-1", "dd-2"):
        assert sorted(r["job_id"] for r in rows[name]) == sorted({r["job_id"] for r in rows[name]})  # no double
        assert [r["status"] for r in rows[name]] == ["ok"] * 4, rows[name]
    assert journaled(workdir) == 4  # each job measured once on the device
    devices = json.loads((Path(doc["run_dir"]) / "run.json").read_text())["devices"]
    reconnects = devices["dd-2"]["reconnects"]
    assert len(reconnects) == 1 and reconnects[0]["ok"] is True
    assert reconnects[0]["attempts"] >= 2  # at least one refused while sshd was down
    assert devices["dd-0"]["reconnects"] == [] and devices["dd-1"]["reconnects"] == []
