"""Fleet scaling: 16 loopback SSH devices x the demo family's 4 variants.

Three ratios (targets from issue #4), written to ``bench/results/fleet_scaling.json``:

1. controller wall time of ``edgebench run`` (the whole CLI process, as a user waits for it) vs the
   slowest device's own measuring time (the wall time of its ``agent batch``): target <= 1.15;
2. the same wall time vs a naive sequential loop that, per host and variant, does ``scp`` (agent + model)
   + ``ssh ... python agent.pyz run`` with the same measurement settings: target <= 0.15;
3. a second identical run's wall time vs the first's: target <= 0.7, with 0 bytes re-pushed.

Each device is its own sshd on 127.0.0.1 with its own workdir (fresh for the first run), running the
agent with the "bare device" venv (.venv-agent: numpy + ai-edge-litert). All 16 share this box's cores,
so a device's measuring time includes that contention; the ratios compare like with like.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures_fleet import DEVICE_PYTHON, SSHFactory, device_entry, keygen, write_inventory

DEVICES = 16
MODELS = REPO / "models" / "demo"
VARIANTS = ("fp32", "fp16", "dynamic", "int8")
SETTINGS = ["--runs", "20", "--warmup", "2", "--min-seconds", "1.0", "--warmup-min-seconds", "0.2"]
RUN_DEADLINE = 900
OUT = REPO / "bench" / "results" / "fleet_scaling.json"


def controller_run(inventory: Path, out: Path, pyz: str) -> tuple[float, dict]:
    """One ``edgebench run models/demo`` over the fleet; (wall seconds, its --json document)."""
    argv = [str(REPO / ".venv" / "bin" / "edgebench"), "run", str(MODELS), "--devices", str(inventory),
            "--out", str(out), "--parallel", str(DEVICES), "--no-eval", "--agent", pyz, "--json", *SETTINGS]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_DEADLINE, check=False, cwd=REPO)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"edgebench run exited {proc.returncode}: {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def naive_loop(servers, key: Path, known_hosts: Path, root: Path, pyz: str) -> float:
    """scp + ssh + python per host and variant, one after the other; wall seconds."""
    ssh_opts = ["-i", str(key), "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes"]
    start = time.monotonic()
    for server in servers:
        remote_dir = root / f"naive-{server.name}"
        remote_dir.mkdir(parents=True)
        for variant in VARIANTS:
            model = MODELS / f"demo.{variant}.tflite"
            subprocess.run(["scp", "-q", *ssh_opts, "-P", str(server.port), pyz, str(model),
                            f"root@127.0.0.1:{remote_dir}/"],
                           check=True, timeout=120, capture_output=True)
            command = shlex.join([DEVICE_PYTHON, f"{remote_dir}/{Path(pyz).name}", "run",
                                  f"{remote_dir}/{model.name}", "--json", *SETTINGS])
            subprocess.run(["ssh", *ssh_opts, "-p", str(server.port), "root@127.0.0.1", command],
                           check=True, timeout=300, capture_output=True)
    return time.monotonic() - start


def main() -> int:
    from controller.fleet.agent_build import agent_zipapp

    root = Path(tempfile.mkdtemp(prefix="edgebench-fleet-bench-"))
    key = keygen(root / "id_ed25519", "bench")
    factory = SSHFactory(root=root / "sshd", key=key)
    (root / "sshd").mkdir()
    try:
        servers = [factory.start(f"dev-{i:02d}") for i in range(DEVICES)]
        known_hosts = root / "known_hosts"
        known_hosts.write_text("".join(s.host_key_line for s in servers))
        entries = [device_entry(s, key, known_hosts, root / f"work {s.name}") for s in servers]
        inventory = write_inventory(root / "devices.yaml", entries)
        pyz = shutil.copy(agent_zipapp(), root / "edgebench-agent.pyz")  # one agent for the whole benchmark
        wall1, first = controller_run(inventory, root / "reports", str(pyz))
        wall2, second = controller_run(inventory, root / "reports", str(pyz))
        naive = naive_loop(servers, key, known_hosts, root, str(pyz))
    finally:
        factory.stop_all()
    slowest1 = max(d["batch_seconds"] for d in first["devices"].values())
    slowest2 = max(d["batch_seconds"] for d in second["devices"].values())
    pushed1 = sum(d["bytes_pushed"] for d in first["devices"].values())
    pushed2 = sum(d["bytes_pushed"] for d in second["devices"].values())
    jobs = sum(d["jobs_done"] for d in first["devices"].values())
    def phases(doc: dict) -> dict:
        """Median and max seconds per device step (connect, agent, info, push, gate, batch, fetch)."""
        steps = sorted({k for d in doc["devices"].values() for k in d["phases"]})
        out = {}
        for step in steps:
            values = sorted(d["phases"].get(step, 0.0) for d in doc["devices"].values())
            out[step] = {"median": round(values[len(values) // 2], 2), "max": round(values[-1], 2)}
        return out

    result = {
        "benchmark": "fleet_scaling",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu_count": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version()},
        "devices": DEVICES, "variants": list(VARIANTS), "jobs": jobs, "settings": SETTINGS,
        "first_run_wall_s": round(wall1, 2), "second_run_wall_s": round(wall2, 2),
        "slowest_device_measuring_s": round(slowest1, 2), "slowest_device_measuring_second_run_s": round(slowest2, 2),
        "naive_sequential_wall_s": round(naive, 2),
        "bytes_pushed_first": pushed1, "bytes_pushed_second": pushed2,
        "device_steps_first": phases(first), "device_steps_second": phases(second),
        "ratios": {
            "wall_vs_slowest_device": {"value": round(wall1 / slowest1, 3), "target": 1.15},
            "wall_vs_naive_sequential": {"value": round(wall1 / naive, 3), "target": 0.15},
            "second_vs_first_wall": {"value": round(wall2 / wall1, 3), "target": 0.7},
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, OUT)
    for name, ratio in result["ratios"].items():
        verdict = "meets" if ratio["value"] <= ratio["target"] else "MISSES"
        print(f"{name}: {ratio['value']:.3f} ({verdict} target <= {ratio['target']})")
    print(f"first run {wall1:.1f} s, second {wall2:.1f} s, slowest device measuring {slowest1:.1f} s, naive "
          f"{naive:.1f} s; bytes pushed {pushed1} then {pushed2}")
    shutil.rmtree(root, ignore_errors=True)
    return 0 if jobs == DEVICES * len(VARIANTS) and pushed2 == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
