"""CPU placement (--cpus) and the machine state around a job.

Clusters, governors, frequencies and thermal zones of a big.LITTLE board cannot exist on this 2-CPU VM,
so they are read from a sysfs-shaped folder (the one thing faked). The pinning itself is real: this
machine's CPUs 0 and 1, checked from the worker's own affinity.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent import cpus, state
from agent.errors import UsageError
from agent.job import JobSpec
from agent.runner import RunnerOptions, run_job
from tests.test_agent_run import quick

REPO = Path(__file__).resolve().parent.parent


def board(root: Path, capacities: dict, governors: dict | None = None, freqs: dict | None = None,
          hw_freqs: dict | None = None, max_freqs: dict | None = None, zones: dict | None = None) -> Path:
    """A sysfs tree under ``root``: cpuN/cpu_capacity, cpufreq files, thermal zones (type -> milli C)."""
    cpu = root / "sys" / "devices" / "system" / "cpu"
    ids = sorted(set(capacities) | set(max_freqs or {}))
    cpu.mkdir(parents=True, exist_ok=True)
    (cpu / "online").write_text(f"0-{max(ids)}\n")
    for i in ids:
        folder = cpu / f"cpu{i}" / "cpufreq"
        folder.mkdir(parents=True, exist_ok=True)
        if capacities.get(i) is not None:
            (cpu / f"cpu{i}" / "cpu_capacity").write_text(f"{capacities[i]}\n")
        for name, values in (("scaling_governor", governors), ("scaling_cur_freq", freqs),
                             ("cpuinfo_cur_freq", hw_freqs), ("cpuinfo_max_freq", max_freqs)):
            if values and i in values:
                (folder / name).write_text(f"{values[i]}\n")
    for n, (kind, milli) in enumerate((zones or {}).items()):
        zone = root / "sys" / "class" / "thermal" / f"thermal_zone{n}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(f"{milli}\n")
    return root


BIG_LITTLE = {0: 446, 1: 446, 2: 446, 3: 446, 4: 1024, 5: 1024, 6: 1024, 7: 1024}


def test_a_big_little_board_has_two_clusters_by_capacity(tmp_path):
    root = board(tmp_path, BIG_LITTLE)
    groups = cpus.clusters(root)
    assert [(g.name, g.cpus, g.capacity, g.source) for g in groups] == [
        ("little", (0, 1, 2, 3), 446, "cpu_capacity"), ("big", (4, 5, 6, 7), 1024, "cpu_capacity")]
    assert cpus.resolve("big", root) == [4, 5, 6, 7]
    assert cpus.resolve("little", root) == [0, 1, 2, 3]
    assert cpus.resolve("all", root) == list(range(8))
    assert cpus.resolve("1,5-6", root) == [1, 5, 6]
    assert cpus.resolve(None, root) is None
    assert cpus.label([4, 6], groups) == "big" and cpus.label([0], groups) == "little"
    assert cpus.label([3, 4], groups) == "mixed" and cpus.label(list(range(8)), groups) == "all"


def test_without_capacity_the_max_frequency_groups_three_clusters(tmp_path):
    max_freqs = {0: 1800000, 1: 1800000, 2: 2400000, 3: 2400000, 4: 3000000}
    root = board(tmp_path, {i: None for i in max_freqs}, max_freqs=max_freqs)
    groups = cpus.clusters(root)
    assert [(g.name, g.cpus, g.source) for g in groups] == [
        ("little", (0, 1), "cpuinfo_max_freq"), ("mid", (2, 3), "cpuinfo_max_freq"), ("big", (4,), "cpuinfo_max_freq")]
    assert cpus.resolve("big", root) == [4]


def test_a_uniform_machine_is_one_cluster_and_big_is_every_cpu(tmp_path):
    root = board(tmp_path, {0: 1024, 1: 1024, 2: 1024})
    assert [g.name for g in cpus.clusters(root)] == ["all"]
    assert cpus.resolve("big", root) == cpus.resolve("little", root) == [0, 1, 2]
    # this machine's own sysfs: 2 CPUs of equal capacity
    assert cpus.clusters(Path("/"))[0].cpus == tuple(sorted(os.sched_getaffinity(0)))


@pytest.mark.parametrize("text,ids", [("0", [0]), ("0-3", [0, 1, 2, 3]), ("5,1-2", [1, 2, 5]), ("3,3", [3])])
def test_cpu_lists_parse_like_the_kernel_writes_them(text, ids):
    assert cpus.parse_cpulist(text) == ids


@pytest.mark.parametrize("bad", ["", "a", "1-", "3-1", "0,,1", "-1", "big,0"])
def test_a_bad_placement_is_a_usage_error_naming_the_forms(bad):
    with pytest.raises(UsageError, match="all, big, little or a CPU list"):
        cpus.check_placement(bad)
    with pytest.raises(UsageError):
        JobSpec(model="m.tflite", cpus=bad).validate()


def test_a_cpu_that_is_not_online_is_refused_naming_the_online_ones(tmp_path):
    root = board(tmp_path, {0: 1024, 1: 1024, 2: 1024, 3: 1024})
    with pytest.raises(UsageError, match=r"\[9\] are not online.*online: 0-3"):
        cpus.resolve("2,9", root)


# ---- real pinning on this machine's CPUs 0 and 1 ------------------------------------------------------

@pytest.mark.parametrize("placement,expected", [("1", [1]), ("0", [0]), ("0-1", [0, 1]), ("all", [0, 1])])
def test_the_worker_runs_on_the_cpus_asked_and_records_them(test_models, placement, expected):
    doc = run_job(quick(test_models["float32"], cpus=placement))
    assert doc["status"] == "ok", doc["error"]
    assert doc["env"]["affinity"] == expected and doc["env"]["cpus_requested"] == placement
    assert doc["env"]["cluster"] == "all"  # one cluster here (equal cpu_capacity)
    assert [c["cpu"] for c in doc["state"]["before"]["cpus"]] == expected
    assert [c["cpu"] for c in doc["state"]["after"]["cpus"]] == expected


def test_more_threads_than_pinned_cpus_is_a_warning(test_models):
    doc = run_job(quick(test_models["float32"], cpus="1", threads=2))
    assert doc["status"] == "ok"
    assert any("2 threads on 1 CPU(s) [1]" in w for w in doc["warnings"])
    alone = run_job(quick(test_models["float32"], cpus="0-1", threads=2))
    assert not any("threads on" in w for w in alone["warnings"])


def test_a_cpu_this_device_lacks_is_a_bad_placement_document(test_models):
    doc = run_job(quick(test_models["float32"], cpus="7"))
    assert doc["status"] == "error" and doc["error"]["kind"] == "bad_placement"
    assert "[7] are not online" in doc["error"]["message"]
    assert doc["env"]["affinity"] is None and doc["timing"]["p50_ms"] is None


def test_big_on_a_board_tree_pins_to_the_big_core(test_models, tmp_path):
    """A sysfs tree says cpu1 is the big core; the pinning to it is real."""
    root = board(tmp_path, {0: 512, 1: 1024}, governors={0: "powersave", 1: "performance"},
                 freqs={0: 1200000, 1: 2400000}, zones={"cpu-thermal": 48500, "gpu-thermal": 51000})
    options = RunnerOptions(extra_env={"EDGEBENCH_AGENT_SYSFS_ROOT": str(root)})
    doc = run_job(quick(test_models["float32"], cpus="big"), options)
    assert doc["status"] == "ok", doc["error"]
    assert doc["env"]["affinity"] == [1] and doc["env"]["cluster"] == "big"
    before = doc["state"]["before"]
    assert before["cpus"] == [{"cpu": 1, "governor": "performance", "freq_mhz": 2400}]
    assert before["freq_source"] == "scaling_cur_freq"
    assert (before["temp_c"], before["thermal_zone"]) == (51.0, "gpu-thermal")
    assert doc["env"]["governor"] == "performance" and doc["env"]["freq_mhz"] == 2400  # not cpu0's
    assert doc["env"]["temp_c_before"] == 51.0 == doc["env"]["temp_c_after"]


def test_the_snapshot_prefers_the_hardware_frequency_and_says_so(tmp_path):
    root = board(tmp_path, {0: 512, 1: 1024}, governors={0: "schedutil", 1: "performance"},
                 freqs={0: 1200000, 1: 2400000}, hw_freqs={0: 600000, 1: 2300000})
    snap = state.snapshot([0, 1], root)
    assert [c["freq_mhz"] for c in snap["cpus"]] == [600, 2300] and snap["freq_source"] == "cpuinfo_cur_freq"
    assert state.governor_of(snap) == "mixed" and state.freq_of(snap) == 600
    empty = state.snapshot([0], tmp_path / "nothing")
    assert empty["cpus"] == [{"cpu": 0, "governor": None, "freq_mhz": None}] and empty["temp_c"] is None


# ---- Raspberry Pi throttle bits -------------------------------------------------------------------------

@pytest.mark.parametrize("text,bits", [("throttled=0x0\n", 0), ("throttled=0x50005", 0x50005), ("garbage", None)])
def test_vcgencmd_output_is_parsed(text, bits):
    assert state.parse_throttled(text) == bits


def test_throttle_reasons_are_current_bits_and_bits_that_appeared_during_the_job():
    assert state.throttle_reasons({"throttle_bits": 0}, {"throttle_bits": 0}) == []
    assert state.throttle_reasons({"throttle_bits": 0}, {"throttle_bits": None}) == []
    assert state.throttle_reasons({"throttle_bits": 0}, {"throttle_bits": 0x4}) == ["throttled (now)"]
    # soft temperature limit occurred during the job (bit 19 new), under-voltage occurred before it (bit 16)
    assert state.throttle_reasons({"throttle_bits": 0x10000}, {"throttle_bits": 0x90000}) == [
        "soft temperature limit (during the job)"]


def test_a_vcgencmd_on_the_path_is_asked_for_the_throttle_bits(tmp_path, monkeypatch):
    """vcgencmd exists only on a Raspberry Pi: a stand-in script that answers like it."""
    program = tmp_path / "vcgencmd"
    program.write_text("#!/bin/sh\n[ \"$1\" = get_throttled ] && echo throttled=0x20002\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert state.vcgencmd_throttled() == 0x20002
    assert state.snapshot([0], tmp_path)["throttle_bits"] == 0x20002
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert state.vcgencmd_throttled() is None


# ---- the command line --------------------------------------------------------------------------------

def agent_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, check=False)


def test_run_cpus_reaches_the_worker_and_a_bad_one_exits_2(test_models):
    import json

    proc = agent_cli("run", str(test_models["float32"]), "--cpus", "1", "--runs", "3", "--min-seconds", "0",
                     "--warmup-min-seconds", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["env"]["affinity"] == [1]
    bad = agent_cli("run", str(test_models["float32"]), "--cpus", "fast")
    assert bad.returncode == 2 and "cpus 'fast'" in bad.stderr


def test_batch_cpus_pins_jobs_that_do_not_say_otherwise(test_models, tmp_path):
    import json

    settings = {"runs": 3, "min_seconds": 0, "warmup_min_seconds": 0}
    jobs = [{"model": str(test_models["float32"]), "id": "free", **settings},
            {"model": str(test_models["float32"]), "id": "own", "cpus": "1", **settings}]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    proc = agent_cli("batch", str(tmp_path / "jobs.json"), "--out", str(tmp_path / "out"), "--cpus", "0")
    assert proc.returncode == 0, proc.stderr
    affinity = {name: json.loads((tmp_path / "out" / f"{name}.json").read_text())["env"]["affinity"]
                for name in ("free", "own")}
    assert affinity == {"free": [0], "own": [1]}


def test_info_lists_the_clusters_that_big_and_little_mean(tmp_path):
    import json

    proc = agent_cli("info", "--json", "--runtime", "auto")
    assert proc.returncode == 0, proc.stderr
    here = json.loads(proc.stdout)["clusters"]
    assert here == [{"name": c.name, "cpus": list(c.cpus), "capacity": c.capacity, "source": c.source}
                    for c in cpus.clusters(Path("/"))]
    assert [c["name"] for c in here] == ["all"] and here[0]["cpus"] == sorted(os.sched_getaffinity(0))
    root = board(tmp_path, BIG_LITTLE)
    proc = subprocess.run([sys.executable, "-m", "agent", "info", "--runtime", "auto"], capture_output=True,
                          text=True, timeout=120, cwd=REPO, check=False,
                          env=dict(os.environ, EDGEBENCH_AGENT_SYSFS_ROOT=str(root)))
    assert "clusters  little [0, 1, 2, 3], big [4, 5, 6, 7]" in proc.stdout
