"""The lean round trip per device: how many exchanges with a device a run needs before measuring starts,
over a real loopback sshd and locally (both transports count the same operations), and the controller's
cache of ``agent info`` (keyed by agent, python and runtime versions) - with a real agent, real models and
a device interpreter whose runtime the test takes away for real.

The counts are exact: a round trip added anywhere on the path fails these tests. First run: probe, stage
(agent + model pushed and verified, ``agent info``), batch = 3. Cached run: probe, batch = 2. The results
come inline in the batch's events, so there is nothing after the batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
from pathlib import Path

import pytest

from controller.cli import main
from controller.fleet.info_cache import cache_key
from controller.fleet.inventory import Device
from tests.fixtures_fleet import DEVICE_PYTHON, device_entry, write_inventory

FAST = ["--runs", "3", "--warmup", "1", "--min-seconds", "0", "--warmup-min-seconds", "0", "--no-eval"]


def run_json(*argv: str) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", *argv, "--json"])
    return code, json.loads(out.getvalue())


def purelib(python: str | Path) -> str:
    return subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


@pytest.fixture
def device_python(tmp_path) -> tuple[Path, Path]:
    """(python, its .pth file): a device interpreter of its own - a venv that sees the bare device venv's
    packages (numpy + ai-edge-litert) through a .pth file, so removing that file really uninstalls the
    runtime for it."""
    venv = tmp_path / "device-venv"
    subprocess.run([DEVICE_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pth = Path(purelib(python)) / "bare_device_packages.pth"
    pth.write_text(purelib(DEVICE_PYTHON) + "\n")
    return python, pth


@pytest.fixture
def info_cache(tmp_path, monkeypatch) -> Path:
    """An empty controller cache for this test (the agent is given with --agent: nothing is rebuilt)."""
    folder = tmp_path / "controller-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder / "edgebench" / "device-info"


def one_device(where: str, ssh_fleet, tmp_path: Path, python: Path) -> Path:
    if where == "ssh":
        entry = device_entry(ssh_fleet.servers[0], ssh_fleet.key, ssh_fleet.known_hosts, tmp_path / "work",
                             python=str(python))
    else:
        entry = {"name": "here", "transport": "local", "workdir": str(tmp_path / "work"), "python": str(python)}
    return write_inventory(tmp_path / f"devices-{where}.yaml", [entry])


def device_of(doc: dict) -> dict:
    (status,) = doc["devices"].values()
    return status


def counts(status: dict) -> tuple:
    return status["round_trips_before_measuring"], status["round_trips"], status["info_cached"]


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_a_first_run_takes_3_round_trips_a_cached_run_2(where, ssh_fleet, test_models, agent_pyz, info_cache,
                                                        device_python, tmp_path):
    inventory = one_device(where, ssh_fleet, tmp_path, device_python[0])
    model = str(test_models["float32"])
    args = ["--devices", str(inventory), "--agent", str(agent_pyz), *FAST]

    code, first = run_json(model, "--out", str(tmp_path / "out1"), *args)
    status = device_of(first)
    assert code == 0, status["reason"]
    assert counts(status) == (3, 3, False)  # probe; stage (agent + model + info); batch
    assert status["bytes_pushed"] == Path(agent_pyz).stat().st_size + Path(model).stat().st_size
    assert len(list(info_cache.iterdir())) == 1

    code, second = run_json(model, "--out", str(tmp_path / "out2"), *args)
    status = device_of(second)
    assert code == 0, status["reason"]
    assert counts(status) == (2, 2, True)  # probe (info from the cache, all files there); batch
    assert status["bytes_pushed"] == 0
    assert 0 < status["measuring_seconds"] <= status["batch_seconds"] < status["seconds"]
    assert status["runtime"] == device_of(first)["runtime"] == "ai-edge-litert"
    rows = {r["device"]: r for r in second["results"]}
    assert rows[status["name"]]["status"] == "ok" and rows[status["name"]]["p50_ms"] > 0 and rows[status["name"]]["count"] >= 3
    # run.json (what later tools read) records the same counts next to the per-phase seconds
    run_json_file = Path(second["run_dir"]) / "run.json"
    recorded = json.loads(run_json_file.read_text())["devices"][status["name"]]
    assert counts(recorded) == (2, 2, True) and recorded["phases"]["probe"] > 0


def test_a_changed_agent_or_runtime_asks_the_device_again(ssh_fleet, test_models, agent_pyz, info_cache,
                                                        device_python, tmp_path):
    python, pth = device_python
    inventory = one_device("ssh", ssh_fleet, tmp_path, python)
    model = str(test_models["float32"])
    args = ["--devices", str(inventory), *FAST]
    # another agent: the same code under another first line (a zipapp's shebang), so another sha256
    other_pyz = tmp_path / "other-agent.pyz"
    data = Path(agent_pyz).read_bytes()
    assert data.startswith(b"#!")
    other_pyz.write_bytes(b"#!/usr/bin/env python3 \n" + data.split(b"\n", 1)[1])

    def run(pyz: Path, n: int) -> tuple[int, dict]:
        code, doc = run_json(model, "--out", str(tmp_path / f"out{n}"), "--agent", str(pyz), *args)
        return code, device_of(doc)

    assert counts(run(agent_pyz, 1)[1]) == (3, 3, False)
    assert counts(run(agent_pyz, 2)[1]) == (2, 2, True)
    code, status = run(other_pyz, 3)
    assert code == 0 and counts(status) == (3, 3, False)  # pushed and asked: not the first agent's answer
    assert status["bytes_pushed"] == other_pyz.stat().st_size

    pth.unlink()  # the runtime is gone for this python: the cached "ok" must not be trusted
    code, status = run(agent_pyz, 4)
    assert code != 0 and status["state"] == "failed" and status["kind"] == "runtime"
    assert "edgebench bootstrap" in status["reason"]
    assert status["info_cached"] is False and status["round_trips"] == 2  # probe; stage (info only)
    assert status["round_trips_before_measuring"] is None

    pth.write_text(purelib(DEVICE_PYTHON) + "\n")  # back as it was: the first answer applies again
    code, status = run(agent_pyz, 5)
    assert code == 0 and counts(status) == (2, 2, True)


def test_the_info_cache_key_follows_each_fact_it_depends_on():
    device = Device(name="rpi", host="10.0.0.7")
    facts = {"executable": "/usr/bin/python3", "python_version": "3.11.2", "uname": ["Linux", "rpi", "6.1"],
             "cpu_count": 4, "runtimes": {"ai-edge-litert": "2.3.0", "tflite-runtime": None},
             "numpy_version": "1.26.4"}
    key = cache_key(device, "a" * 64, "auto", facts)
    assert key == cache_key(device, "a" * 64, "auto", json.loads(json.dumps(facts)))
    changed = [
        cache_key(device, "b" * 64, "auto", facts),
        cache_key(device, "a" * 64, "tflite-runtime", facts),
        cache_key(Device(name="rpi2", host="10.0.0.7"), "a" * 64, "auto", facts),
        cache_key(device, "a" * 64, "auto", {**facts, "runtimes": {"ai-edge-litert": "2.4.0", "tflite-runtime": None}}),
        cache_key(device, "a" * 64, "auto", {**facts, "runtimes": {"ai-edge-litert": "2.3.0", "tflite-runtime": "2.14"}}),
        cache_key(device, "a" * 64, "auto", {**facts, "numpy_version": "2.0.0"}),
        cache_key(device, "a" * 64, "auto", {**facts, "python_version": "3.12.1"}),
        cache_key(device, "a" * 64, "auto", {**facts, "uname": ["Linux", "rpi", "6.6"]}),
    ]
    assert key not in changed and len(set(changed)) == len(changed)


def test_the_info_cache_keeps_the_newest_answers_only(tmp_path, monkeypatch):
    import os

    from controller.fleet import info_cache

    monkeypatch.setattr(info_cache, "MAX_ENTRIES", 3)
    cache = info_cache.InfoCache(str(tmp_path / "device-info"))
    keys = [hashlib.sha256(bytes([i])).hexdigest() for i in range(5)]  # as cache_key makes them
    for age, key in enumerate(keys):
        cache.save(key, {"agent_version": key})
        path = cache._path(key)
        os.utime(path, ns=(age * 10**9, age * 10**9))  # written in this order, one second apart
    assert [cache.load(k) for k in keys[:2]] == [None, None]
    assert [cache.load(k)["agent_version"] for k in keys[2:]] == keys[2:]
    (tmp_path / "device-info" / os.path.basename(cache._path(keys[4]))).write_text("{not json")
    assert cache.load(keys[4]) is None  # an unreadable entry: ask the device again


def test_when_the_first_runtime_does_not_import_the_run_uses_the_next_still_in_3_round_trips(
        ssh_fleet, test_models, agent_pyz, info_cache, tmp_path):
    """The probe's guess (ai-edge-litert, from its metadata) is wrong: its package is installed but broken
    for this python, so ``agent info`` picks tflite-runtime. The preflight runs again for that runtime; the
    model is already staged, so no round trip is added."""
    venv = tmp_path / "broken-litert"
    subprocess.run([DEVICE_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(purelib(python))
    broken = site / "ai_edge_litert"  # found before the real one: an install that does not import
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('this build does not load here')\n")
    dev_site = purelib(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python")
    (site / "dev_packages.pth").write_text(dev_site + "\n")  # numpy, tflite-runtime and litert's metadata
    inventory = one_device("ssh", ssh_fleet, tmp_path, python)
    code, doc = run_json(str(test_models["float32"]), "--out", str(tmp_path / "out"), "--devices", str(inventory),
                         "--agent", str(agent_pyz), *FAST)
    status = device_of(doc)
    assert code == 0, status["reason"]
    assert status["runtime"] == "tflite-runtime" and counts(status) == (3, 3, False)
    (row,) = doc["results"]
    assert row["status"] == "ok" and row["runtime"] == "tflite-runtime"
