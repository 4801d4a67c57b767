"""``edgebench nightly`` end to end: real agent, real workers, real runtime and model, on this machine and
over the loopback SSH devices. A device is made slower on purpose by tests/slow_device.py (a busy-wait
after each real inference), the way a board degrades: the fingerprint stays the same.

The tests pass --threshold 3 and make regressions of about x7, so that the load of a shared 2-core box
(seen at load average 7: it moves a p50 by tens of percent) does not decide them; compare's own sensitivity (a 20 % shift) is
tested on seeded samples in tests/test_compare.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli import main
from tests.fixtures_fleet import DEVICE_PYTHON, device_entry, write_inventory
from tests.slow_device import make_slow_device

REPO = Path(__file__).resolve().parent.parent
FAST = ["--runs", "30", "--warmup", "2", "--min-seconds", "0", "--warmup-min-seconds", "0", "--threshold", "3",
        "--cooldown", "0.2"]
SLOW_MS = 4.0  # bench_medium takes ~0.7 ms here: about x7


def nightly_json(*argv: str) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["nightly", *argv, "--json"])
    return code, json.loads(out.getvalue())


@pytest.fixture
def local_board(tmp_path):
    """A devices.yaml with one local device whose speed the test controls."""
    device = make_slow_device(tmp_path / "device")
    inventory = write_inventory(tmp_path / "devices.yaml", [
        {"name": "local", "transport": "local", "python": str(device.python), "workdir": str(tmp_path / "work")}])
    return device, inventory


@pytest.mark.slow
def test_five_nights_on_the_local_device(local_board, test_models, tmp_path):
    device, inventory = local_board
    out = tmp_path / "reports"
    args = [str(test_models["bench_medium"]), "--devices", str(inventory), "--out", str(out), *FAST]

    code, first = nightly_json(*args)  # night 1: nothing to compare with
    assert code == 0
    assert first["baseline"]["last_comparable"] is None
    assert [u["kind"] for u in first["comparison"]["unpaired"]] == ["new"]
    run1 = Path(first["run_dir"])
    assert json.loads((run1 / "run.json").read_text())["kind"] == "nightly"
    assert (run1 / "regressions.md").read_text().startswith(f"# Nightly {first['run_id']}")

    device.set(SLOW_MS, workers=1)  # night 2: only the first worker is slow - a fluke
    code, fluke = nightly_json(*args)
    assert code == 0
    assert fluke["regressions"] == []
    [finding] = fluke["not_confirmed"]
    assert finding["verdict"] == "regressed" and finding["ratio"] > 3 and finding["remeasure_ratio"] < 3
    remeasured = Path(fluke["remeasure_dir"])
    assert remeasured == Path(fluke["run_dir"]) / "remeasure"
    assert [p.name for p in (remeasured / "results" / "local").glob("*.json")] == ["000-bench_medium---t1.json"]
    assert [k["baseline_ok"] for k in fluke["keys"]] == [False]

    device.normal()  # night 3: judged against night 1, not the fluke
    code, normal = nightly_json(*args)
    assert code == 0
    assert [(p["base_run"], p["verdict"]) for p in normal["comparison"]["pairs"]] == [(first["run_id"], "unchanged")]
    assert normal["remeasure_dir"] is None

    device.set(SLOW_MS)  # night 4: the board really got slower
    code, slow = nightly_json(*args)
    assert code == 5
    [regression] = slow["regressions"]
    assert regression["kinds"] == ["latency"] and regression["confirmed"]
    assert regression["ratio"] > 3 and regression["remeasure_ratio"] > 3
    assert json.loads((Path(slow["run_dir"]) / "run.json").read_text())["exit_code"] == 5

    device.normal()  # night 5: faster than the (confirmed, slow) baseline, and confirmed: baseline moves
    code, back = nightly_json(*args)
    assert code == 0
    assert [f["model"] for f in back["improvements"]] == ["bench_medium"]
    assert [k["baseline_ok"] for k in back["keys"]] == [True]
    log = (out / "nightly.log").read_text()
    assert log.count(": exit ") == 5 and f"nightly {slow['run_id']}: exit 5" in log


@pytest.mark.slow
def test_without_a_terminal_progress_is_plain_log_lines(local_board, test_models, tmp_path):
    _device, inventory = local_board
    out = tmp_path / "reports"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "controller", "nightly", str(test_models["bench_tiny"]),
                           "--devices", str(inventory), "--out", str(out), "--log-file", str(tmp_path / "n.log"),
                           *FAST], check=False, capture_output=True, text=True, timeout=300, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "INFO controller.nightly.progress: local: done" in proc.stderr
    assert "\x1b[" not in proc.stderr and "┏" not in proc.stderr  # no live board, no colour codes
    assert proc.stdout.startswith("# Nightly ") and "run folder: " in proc.stdout
    log = (tmp_path / "n.log").read_text().splitlines()
    assert log[0][:4].isdigit() and " INFO controller.nightly: nightly starting: 1 model file(s) on 1 device(s)" in log[0]
    assert not (out / "nightly.log").exists()  # --log-file replaced the default


@pytest.mark.slow
def test_two_nightlies_never_overlap_and_a_killed_one_does_not_block(local_board, test_models, tmp_path, capsys):
    _device, inventory = local_board
    out = tmp_path / "reports"
    out.mkdir()
    holder = subprocess.Popen(
        [DEVICE_PYTHON, "-c", ("import sys, time\nsys.path.insert(0, sys.argv[2])\nfrom agent.lock import DeviceLock\n"
         "lock = DeviceLock(sys.argv[1], 0); lock.acquire(); print('held', flush=True); time.sleep(120)"),
         str(out / ".nightly.lock"), str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 20)
        assert ready and holder.stdout.readline().strip() == "held"
        args = ["nightly", str(test_models["bench_tiny"]), "--devices", str(inventory), "--out", str(out), *FAST]
        assert main(args) == 3
        err = capsys.readouterr().err
        assert f"another nightly (pid {holder.pid}) is running" in err and "did not start" in err
        assert not [p for p in out.iterdir() if p.is_dir()]  # nothing was run
    finally:
        holder.kill()  # killed, as by the OOM killer or kill -9: the kernel frees the flock
        holder.wait(timeout=10)
    assert main(args) == 0


def test_config_file_with_the_command_line_winning(local_board, test_models, tmp_path, capsys):
    _device, inventory = local_board
    out = tmp_path / "reports"
    config = tmp_path / "nightly.yaml"
    config.write_text(f"models: [{test_models['bench_tiny']}]\ndevices: {inventory}\nout: {out}\nruns: 12\n"
                      "warmup-min-seconds: 0\nmin_seconds: 0\nthreads: [1]\ncooldown: 0\nthreshold: 3\n")
    code, doc = nightly_json("--config", str(config), "--runs", "9")
    assert code == 0
    settings = json.loads((Path(doc["run_dir"]) / "run.json").read_text())["settings"]
    assert (settings["job"]["runs"], settings["job"]["min_seconds"], settings["threads"]) == (9, 0.0, [1])
    assert doc["limits"]["threshold"] == 3
    config.write_text(f"models: [{test_models['bench_tiny']}]\nrun: 3\n")
    assert main(["nightly", "--config", str(config)]) == 2
    assert "unknown key 'run'" in capsys.readouterr().err


@pytest.mark.slow
def test_nightly_over_ssh_devices_reports_only_the_board_that_got_slower(ssh_fleet, test_models, tmp_path):
    device = make_slow_device(tmp_path / "board-1")
    servers = ssh_fleet.servers[:2]
    entries = [device_entry(servers[0], ssh_fleet.key, ssh_fleet.known_hosts, tmp_path / "w0"),
               device_entry(servers[1], ssh_fleet.key, ssh_fleet.known_hosts, tmp_path / "w1",
                            python=str(device.python))]
    inventory = write_inventory(tmp_path / "devices.yaml", entries)
    out = tmp_path / "reports"
    args = [str(test_models["bench_medium"]), "--devices", str(inventory), "--out", str(out), *FAST]
    code, first = nightly_json(*args)
    assert code == 0 and first["comparison"]["counts"] == {"new": 2}
    device.set(SLOW_MS)
    code, second = nightly_json(*args)
    assert code == 5
    assert [(r["device"], r["confirmed"]) for r in second["regressions"]] == [("board-1", True)]
    assert [p["verdict"] for p in second["comparison"]["pairs"] if p["device"] == "board-0"] == ["unchanged"]
    remeasured = Path(second["remeasure_dir"]) / "results"
    assert sorted(p.name for p in remeasured.iterdir()) == ["board-1"]  # only that job, only that device


def test_an_unsupported_store_stops_the_nightly_before_it_measures(local_board, test_models, tmp_path, capsys):
    _device, inventory = local_board
    out = tmp_path / "reports"
    code = main(["nightly", str(test_models["bench_tiny"]), "--devices", str(inventory), "--out", str(out),
                 "--store", "mysql://db/edgebench", *FAST])
    assert code == 2 and "--store mysql://...: unsupported" in capsys.readouterr().err
    assert not out.exists()  # nothing measured, no run folder, no log file
