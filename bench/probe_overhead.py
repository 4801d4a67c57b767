"""How much does the agent itself cost? Three ratios, written to bench/results/probe_overhead.json.

1. latency: the agent's p50 (``agent.runner.run_job``, a fresh worker, pinned with the job's ``cpus``,
   with its throttle canaries and machine-state snapshots around the timed loop) over the p50 of a bare
   loop of ``interpreter.invoke()`` timed with ``perf_counter_ns`` in a fresh process on the same CPU —
   on a ~50 us model and a ~2.5 ms model. Rounds alternate agent / bare so drift hits both; the ratio is
   the median of the paired rounds' p50 ratios (both p50s interpolated the same way). Target <= 1.01:
   pinning, canaries and snapshots add nothing inside the timed loop.
   Also: what the canary (twice per job) and the state snapshot (twice per job) cost per job, outside
   the timed loop, measured here in this process on the same CPU.
2. memory: the agent worker's peak RSS (VmHWM) minus that of a bare script that only imports the runtime,
   loads and allocates the model and invokes it once. Target <= +10 MB.
3. cold start: wall time of ``python -m agent --help`` and ``python -m agent info`` over that of
   ``python -c "import ai_edge_litert.interpreter"`` (median of several runs).

Same python, same runtime (ai-edge-litert), one thread, XNNPACK on, for agent and baseline.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent import canary, state
from agent.build import build
from agent.job import JobSpec
from agent.runner import run_job
from tests.modelgen import ensure_models

RUNTIME_MODULE = "ai_edge_litert.interpreter"
DEVICE_PYTHON = REPO / ".venv-agent" / "bin" / "python"  # numpy + ai-edge-litert only
ROUNDS = 9
WARMUP_S = 0.5
MEASURE_S = 1.0
COLD_REPEATS = 7
DEADLINE_S = 300

# A bare loop, as a user would write it to time a model: nothing of the agent.
BARE_LOOP = r"""
import sys, time, json
import numpy as np
from ai_edge_litert.interpreter import Interpreter
path, warmup_s, measure_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
it = Interpreter(model_path=path, num_threads=1)
it.allocate_tensors()
for d in it.get_input_details():
    it.set_tensor(d["index"], np.random.default_rng(0).uniform(-1, 1, d["shape"]).astype(d["dtype"]))
end = time.perf_counter() + warmup_s
while time.perf_counter() < end:
    it.invoke()
samples = []
clock = time.perf_counter_ns
stop = clock() + int(measure_s * 1e9)
while True:
    t0 = clock()
    it.invoke()
    t1 = clock()
    samples.append(t1 - t0)
    if t1 >= stop:
        break
samples.sort()
mid = (len(samples) - 1) / 2  # the same linear interpolation as agent.measure.percentile
low = int(mid)
p50 = samples[low] + (samples[min(low + 1, len(samples) - 1)] - samples[low]) * (mid - low)
print(json.dumps({"p50_ns": p50, "count": len(samples)}))
"""

# Only what any use of the model needs: the runtime, the model, allocated, one inference.
BARE_LOAD = r"""
import sys, json
import numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=1)
it.allocate_tensors()
it.invoke()
status = open("/proc/self/status").read()
hwm = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")][0]
print(json.dumps({"peak_rss_kb": hwm}))
"""


def _python(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=DEADLINE_S, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _agent(model: Path, cpu: int) -> dict:
    spec = JobSpec(model=str(model), runs=1, min_seconds=MEASURE_S, warmup=1, warmup_min_seconds=WARMUP_S,
                   runtime="ai-edge-litert", threads=1, timeout=DEADLINE_S, cpus=str(cpu))
    doc = run_job(spec)
    if doc["status"] != "ok":
        raise RuntimeError(f"agent job on {model} failed: {doc['error']}")
    if doc["env"]["affinity"] != [cpu] or doc["canary"]["ratio"] is None or doc["state"]["after"] is None:
        raise RuntimeError(f"the agent job was not pinned to CPU {cpu} with its canary and snapshots: {doc['env']}")
    return doc


def latency_and_memory(name: str, model: Path, cpu: int) -> dict:
    """ROUNDS paired rounds (agent, then bare, back to back); the ratio is the median of the paired ratios."""
    agent_p50, bare_p50, agent_peak, counts = [], [], [], []
    for _ in range(ROUNDS):
        doc = _agent(model, cpu)
        agent_p50.append(doc["timing"]["p50_ms"] * 1e6)
        agent_peak.append(doc["memory"]["peak_rss_kb"])
        bare = _python(BARE_LOOP, str(model), str(WARMUP_S), str(MEASURE_S))
        bare_p50.append(bare["p50_ns"])
        counts.append((doc["timing"]["count"], bare["count"]))
    bare_peak = [_python(BARE_LOAD, str(model))["peak_rss_kb"] for _ in range(ROUNDS)]
    ratios = [a / b for a, b in zip(agent_p50, bare_p50)]
    return {
        "model": name,
        "agent_p50_ms": statistics.median(agent_p50) / 1e6,
        "bare_p50_ms": statistics.median(bare_p50) / 1e6,
        "p50_ratio": statistics.median(ratios),
        "p50_ratio_of_medians": statistics.median(agent_p50) / statistics.median(bare_p50),
        "p50_ratio_of_minimums": min(agent_p50) / min(bare_p50),  # the least disturbed round of each
        "p50_round_spread": (max(bare_p50) - min(bare_p50)) / statistics.median(bare_p50),
        "rounds": {"agent_p50_ms": [x / 1e6 for x in agent_p50], "bare_p50_ms": [x / 1e6 for x in bare_p50],
                   "p50_ratio": ratios, "sample_counts_agent_bare": counts},
        "agent_peak_rss_kb": statistics.median(agent_peak),
        "bare_peak_rss_kb": statistics.median(bare_peak),
        "peak_rss_delta_mb": (statistics.median(agent_peak) - statistics.median(bare_peak)) / 1024,
    }


def around_the_loop(cpu: int, repeats: int) -> dict:
    """What a job spends outside its timed loop on the new probes: the canary and the state snapshot
    (each taken before and after the job), median of ``repeats`` timings on ``cpu``."""
    root = Path("/")
    canary_us, snapshot_us = [], []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        canary.measure()
        t1 = time.perf_counter_ns()
        state.snapshot([cpu], root)
        t2 = time.perf_counter_ns()
        canary_us.append((t1 - t0) / 1000)
        snapshot_us.append((t2 - t1) / 1000)
    per_job_ms = 2 * (statistics.median(canary_us) + statistics.median(snapshot_us)) / 1000
    return {"canary_us": statistics.median(canary_us), "snapshot_us": statistics.median(snapshot_us),
            "per_job_ms": per_job_ms, "repeats": repeats}


def _wall(argv: list) -> float:
    times = []
    for _ in range(COLD_REPEATS):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, timeout=DEADLINE_S, check=True, cwd=REPO)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cold_start(python: str, entry: list) -> dict:
    """Median wall times of ``--help``, ``info --json`` and of importing the runtime, with ``python``."""
    import_s = _wall([python, "-c", f"import {RUNTIME_MODULE}"])
    help_s = _wall([python, *entry, "--help"])
    info_s = _wall([python, *entry, "info", "--json"])
    return {"python": python, "entry": entry, "import_runtime_s": import_s, "agent_help_s": help_s,
            "agent_info_s": info_s, "help_ratio": help_s / import_s, "info_ratio": info_s / import_s}


def main(argv: list | None = None) -> int:
    """``--smoke``: one short round on the tiny model, no cold-start part, results to a temp file (checks
    that the script runs; its figures mean nothing)."""
    global ROUNDS, WARMUP_S, MEASURE_S, COLD_REPEATS
    smoke = "--smoke" in (sys.argv[1:] if argv is None else argv)
    if smoke:
        ROUNDS, WARMUP_S, MEASURE_S, COLD_REPEATS = 1, 0.05, 0.1, 1
    models = ensure_models()
    started = time.time()
    # Agent workers and bare loops inherit this: all on one CPU, so neither gains from migrations. The
    # agent's jobs also pin themselves there (cpus), as a board run with --cpus does.
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    load_before = os.getloadavg()
    names = ("bench_tiny",) if smoke else ("bench_tiny", "bench_medium")
    latency = [latency_and_memory(name, models[name], cpu) for name in names]
    outside = around_the_loop(cpu, 5 if smoke else 51)
    # The device case: the zipapp run by a python with only numpy + ai-edge-litert (.venv-agent). And the
    # dev venv, where `info` also import-checks tflite-runtime and TensorFlow (~5 s of TF import here).
    with tempfile.TemporaryDirectory() as tmp:
        pyz = build(Path(tmp) / "edgebench-agent.pyz")
        cold = cold_start(str(DEVICE_PYTHON), [str(pyz)])
    cold_dev = cold_start(sys.executable, ["-m", "agent"]) if not smoke else None
    result = {
        "bench": "probe_overhead",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "cpu_count": os.cpu_count(), "pinned_cpu": cpu, "loadavg_before": load_before,
                 "loadavg_after": os.getloadavg()},
        "runtime": RUNTIME_MODULE,
        "settings": {"rounds": ROUNDS, "warmup_s": WARMUP_S, "measure_s": MEASURE_S,
                     "cold_repeats": COLD_REPEATS},
        "latency": latency,
        "outside_the_loop": outside,
        "cold_start": cold,
        "cold_start_dev_venv": cold_dev,
        "targets": {"p50_ratio_max": 1.01, "peak_rss_delta_mb_max": 10.0},
        "seconds": time.time() - started,
    }
    out = (Path(tempfile.gettempdir()) / "probe_overhead.smoke.json" if smoke
           else REPO / "bench" / "results" / "probe_overhead.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for row in latency:
        print(f"probe_overhead  {row['model']:<13} p50 agent (pinned, canaries, snapshots) {row['agent_p50_ms']:.4f} ms / bare "
              f"{row['bare_p50_ms']:.4f} ms = {row['p50_ratio']:.3f} (target <= 1.01; of minimums {row['p50_ratio_of_minimums']:.3f}; spread of the bare rounds {row['p50_round_spread']:.0%});  peak RSS +"
              f"{row['peak_rss_delta_mb']:.1f} MB (target <= +10 MB)")
    print(f"probe_overhead  outside the timed loop, per job: canary {outside['canary_us']:.0f} us x 2 + state "
          f"snapshot {outside['snapshot_us']:.0f} us x 2 = {outside['per_job_ms']:.2f} ms")
    for label, c in (("device (pyz, numpy+litert)", cold), ("dev venv (3 runtimes)", cold_dev)):
        if c is None:
            continue
        print(f"probe_overhead  cold start, {label}: --help {c['agent_help_s']:.3f} s, info "
              f"{c['agent_info_s']:.3f} s vs import runtime {c['import_runtime_s']:.3f} s: ratios "
              f"{c['help_ratio']:.2f} / {c['info_ratio']:.2f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
