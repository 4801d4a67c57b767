"""Report / history / compare at scale: a million result rows of history.

Synthesizes a reports folder whose embedded history index holds ~1 M result rows (5,209 runs x 192 jobs:
8 devices x 2 models x 4 variants x 3 thread counts), the last two runs being real run folders written
by the run store from result documents with 1,000 raw samples per job. Then times, as whole commands in
a fresh process (what a user waits for), median of ROUNDS:

* ``edgebench history`` (every series, the table) and ``edgebench history --device dev-3 --variant int8``;
* ``edgebench report --format md,csv`` and ``edgebench report`` (+ html with its plots and trend lines);
* ``edgebench compare BASE NEW`` (the last two runs).

Each against its floor: a bare script that reads the same Parquet with pyarrow and does the same
group-by (history/report: the index file grouped by series; compare: both runs' samples grouped by job).
Targets (issue 8): each command <= 2x its floor and < 3 s. Figures: ``bench/results/report_scale.json``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from controller.fleet.store import RunStore
from controller.history.frame import INDEX_COLUMNS, RUN_COLUMNS
from controller.history.index import open_index, to_arrow
from controller.history.parquet_store import FOLDER

DEVICES = [f"dev-{i}" for i in range(8)]
MODELS = ["mobilenet", "kws"]
VARIANTS = ["fp32", "fp16", "dynamic", "int8"]
THREADS = [1, 2, 4]
TARGET_ROWS = 1_000_000
SAMPLES_PER_JOB = 1000
ROUNDS = 5
OUT = REPO / "bench" / "results" / "report_scale.json"
SPEED = {"fp32": 1.0, "fp16": 0.9, "dynamic": 0.45, "int8": 0.3}
BYTES = {"fp32": 4_000_000, "fp16": 2_000_000, "dynamic": 1_050_000, "int8": 1_070_000}


def jobs() -> list[dict]:
    return [{"device": d, "model": m, "variant": v, "threads": t,
             "fingerprint": f"{abs(hash(d)) % 16**16:016x}"[:16]}
            for d in DEVICES for m in MODELS for v in VARIANTS for t in THREADS]


def base_ms(job: dict) -> float:
    return (2.0 if job["model"] == "mobilenet" else 0.4) * SPEED[job["variant"]] / job["threads"] ** 0.7 \
        * (1 + DEVICES.index(job["device"]) / 8)


def synth_index(out: Path, runs: int, start: datetime.datetime) -> int:
    """Write the index of ``runs`` synthetic runs (no folders) straight as the compacted Parquet file, with
    the index's own schema; returns the row count."""
    rng = np.random.default_rng(7)
    table = pd.DataFrame(jobs())
    n = len(table)
    created = pd.date_range(start, periods=runs, freq="6h", tz="UTC")
    run_ids = [t.strftime("%Y%m%dT%H%M%SZ") + f"-{i:06x}" for i, t in enumerate(created)]
    base = np.array([base_ms(j) for j in table.to_dict("records")])
    p50 = np.tile(base, runs) * rng.lognormal(0, 0.03, n * runs)
    frame = pd.DataFrame({
        "run_id": np.repeat(run_ids, n), "created": np.repeat(created, n), "kind": "nightly",
        "device": np.tile(table["device"], runs), "model": np.tile(table["model"], runs),
        "variant": np.tile(table["variant"], runs), "threads": np.tile(table["threads"], runs),
        "job_id": np.tile([f"{i:03d}-job" for i in range(n)], runs), "runtime": "ai-edge-litert",
        "runtime_version": "2.3.0", "status": "ok", "p50_ms": p50, "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.3,
        "mean_ms": p50 * 1.02, "std_ms": p50 * 0.04, "min_ms": p50 * 0.95, "max_ms": p50 * 1.5,
        "count": SAMPLES_PER_JOB, "init_ms": 3.0, "first_inference_ms": p50 * 2,
        "peak_rss_kb": 60_000, "rss_after_init_kb": 55_000,
        "model_bytes": np.tile(table["variant"].map(BYTES), runs), "model_sha256": "0" * 64,
        "arch": "aarch64", "cpu_model": "Cortex-A72", "cpu_count": 4, "delegates": "XNNPACK", "noisy": False,
        "device_fingerprint": np.tile(table["fingerprint"], runs), "flags": "",
    })
    folder = out / FOLDER
    (folder / "parts").mkdir(parents=True, exist_ok=True)
    pq.write_table(to_arrow(frame, INDEX_COLUMNS), folder / "results.parquet")
    runs_frame = pd.DataFrame({"run_id": run_ids, "created": created, "kind": "nightly",
                               "path": [str(out / r) for r in run_ids], "exit_code": 0, "controller_host": "lab",
                               "tool_version": "0.1.0", "rows": n, "fingerprints": ",".join(sorted(set(table["fingerprint"])))})
    pq.write_table(to_arrow(runs_frame, RUN_COLUMNS), folder / "runs.parquet")
    return len(frame)


def real_run(out: Path, created: datetime.datetime, slower: float, seed: int) -> Path:
    """A run folder written by RunStore from result documents with raw samples (int8 on dev-0 ``slower``)."""
    rng = np.random.default_rng(seed)
    run_id = created.strftime("%Y%m%dT%H%M%SZ") + f"-{seed:06x}"
    store = RunStore.create(str(out), {"created": created.isoformat(), "kind": "nightly",
                                       "controller_host": "lab", "tool_version": "0.1.0",
                                       "devices": {d: {"state": "done"} for d in DEVICES}}, run_id=run_id)
    for i, job in enumerate(jobs()):
        scale = slower if (job["device"], job["variant"]) == ("dev-0", "int8") else 1.0
        samples = rng.lognormal(np.log(base_ms(job) * scale * 1000), 0.05, SAMPLES_PER_JOB).astype(np.int64)
        ms = samples / 1000.0
        doc = {"schema_version": 1, "status": "ok", "error": None,
               "job": {"id": f"{i:03d}-job", "threads": job["threads"],
                       "meta": {"device": job["device"], "model_name": job["model"], "variant": job["variant"],
                                "sha256": "0" * 64, "device_fingerprint": job["fingerprint"]}},
               "model": {"sha256": "0" * 64, "bytes": BYTES[job["variant"]]},
               "runtime": {"name": "ai-edge-litert", "version": "2.3.0", "delegates": ["XNNPACK"]},
               "timing": {"init_ms": 3.0, "first_inference_ms": float(ms[0] * 2), "count": len(ms),
                          "mean_ms": float(ms.mean()), "std_ms": float(ms.std()), "min_ms": float(ms.min()),
                          "max_ms": float(ms.max()), "p50_ms": float(np.percentile(ms, 50)),
                          "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
                          "samples_us": samples.tolist(), "noisy": False},
               "memory": {"peak_rss_kb": 60_000, "rss_after_init_kb": 55_000},
               "env": {"arch": "aarch64", "cpu_model": "Cortex-A72", "cpu_count": 4}}
        store.save_result(job["device"], doc)
    store.write_tables()
    store.save_run_info(exit_code=0, finished=created.isoformat())
    return Path(store.root)


HISTORY_FLOOR = """
import sys, pyarrow.parquet as pq, pyarrow.compute as pc
t = pq.read_table(sys.argv[1], columns=["device", "model", "variant", "threads", "device_fingerprint", "run_id",
                                        "created", "status", "p50_ms"] , filters=FILTER)
t = t.filter(pc.equal(t["status"], "ok")).sort_by("created")
g = t.group_by(["device", "model", "variant", "threads", "device_fingerprint"], use_threads=False).aggregate(
    [("p50_ms", "list"), ("created", "list"), ("run_id", "list")])
print(g.num_rows)
"""

REPORT_FLOOR = """
import sys, pyarrow.parquet as pq, pyarrow.compute as pc
folder = sys.argv[1]
runs = pq.read_table(folder + "/runs.parquet", columns=["run_id", "created"]).sort_by("created")
recent = runs["run_id"].slice(max(0, runs.num_rows - 60))
keys = ["device", "model", "variant", "threads", "device_fingerprint"]
files = [folder + "/results.parquet"] + sys.argv[2:]
expression = pc.field("run_id").isin(recent) & pc.field("model").isin(["kws", "mobilenet"])
import pyarrow as pa
t = pa.concat_tables([pq.read_table(f, columns=keys + ["run_id", "created", "status", "p50_ms"], filters=expression)
                      for f in files])
g = t.group_by(keys, use_threads=False).aggregate([("p50_ms", "list"), ("created", "list")])
print(g.num_rows)
"""

COMPARE_FLOOR = """
import sys, pyarrow.parquet as pq
for path in sys.argv[1:3]:
    t = pq.read_table(path + "/samples.parquet")
    g = t.group_by(["device", "job_id"]).aggregate([("latency_us", "approximate_median"), ("latency_us", "count")])
    print(g.num_rows)
"""


CPU_SECONDS: dict[str, list[float]] = {}  # argv key -> user+sys seconds of each timed run


def timed(argv: list[str], env: dict) -> float:
    """Wall seconds of one run of ``argv``; its CPU seconds (user + sys) go to CPU_SECONDS: on a shared
    box the wall time includes waiting for a core, the CPU time does not."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 5):
        raise RuntimeError(f"{' '.join(argv[:6])}... exited {proc.returncode}: {proc.stderr[-1500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU_SECONDS.setdefault(" ".join(argv), []).append(round(cpu, 3))
    return elapsed


def measure(name: str, command: list[str], floor: list[str], env: dict) -> dict:
    timed(command, env)  # warm the page cache and the .pyc files
    timed(floor, env)
    cmd, flo = [], []
    for _ in range(ROUNDS):  # interleaved, so the box's noise hits both alike
        cmd.append(timed(command, env))
        flo.append(timed(floor, env))
    med, floor_med = statistics.median(cmd), statistics.median(flo)
    cpu = statistics.median(CPU_SECONDS[" ".join(command)][-ROUNDS:])
    floor_cpu = statistics.median(CPU_SECONDS[" ".join(floor)][-ROUNDS:])
    result = {"command": " ".join(command[2:]), "seconds": [round(x, 3) for x in cmd], "median_s": round(med, 3),
              "floor_seconds": [round(x, 3) for x in flo], "floor_median_s": round(floor_med, 3),
              "ratio": round(med / floor_med, 2), "cpu_median_s": cpu, "floor_cpu_median_s": floor_cpu,
              "cpu_ratio": round(cpu / floor_cpu, 2), "target_ratio": 2.0, "target_s": 3.0,
              "met": med <= 2 * floor_med and med < 3.0}
    print(f"{name:>22}: {med:6.2f} s vs floor {floor_med:5.2f} s = {med / floor_med:4.2f}x "
          f"({'met' if result['met'] else 'NOT met'}); CPU {cpu:.2f} s vs {floor_cpu:.2f} s = {cpu / floor_cpu:.2f}x",
          flush=True)
    return result


def main() -> int:
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tmp = Path(tempfile.mkdtemp(prefix="eb-report-scale-"))
    try:
        out = tmp / "reports"
        start = datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)
        t0 = time.monotonic()
        synthetic_runs = -(-TARGET_ROWS // len(jobs())) - 2
        rows = synth_index(out, synthetic_runs, start)
        last = start + datetime.timedelta(hours=6 * synthetic_runs)
        base = real_run(out, last, 1.0, 1)
        new = real_run(out, last + datetime.timedelta(hours=6), 1.25, 2)
        with open_index(out) as index:
            rows += index.add_run(base) + index.add_run(new)
        setup_s = time.monotonic() - t0
        print(f"history: {rows:,} rows in {synthetic_runs + 2:,} runs ({setup_s:.0f} s to synthesize)", flush=True)
        index_file = str(out / FOLDER / "results.parquet")
        floor = [py, "-c", HISTORY_FLOOR.replace("FILTER", "None"), index_file]
        floor_one = [py, "-c", HISTORY_FLOOR.replace(
            "FILTER", "(pc.field('device') == 'dev-3') & (pc.field('variant') == 'int8')"), index_file]
        parts = [str(p) for p in sorted((out / FOLDER / "parts").glob("*.parquet"))]
        floor_report = [py, "-c", REPORT_FLOOR, str(out / FOLDER), *parts]
        cli = [py, "-m", "controller"]
        results = {
            "history": measure("history", cli + ["history", "--out", str(out)], floor, env),
            "history_one_series": measure("history (one device+variant)", cli + [
                "history", "--out", str(out), "--device", "dev-3", "--variant", "int8"], floor_one, env),
            "report_md_csv": measure("report md,csv", cli + ["report", "--out", str(out), "--format", "md,csv",
                                                            "--dest", str(tmp / "r1")], floor_report, env),
            "report_html": measure("report html,md,csv", cli + ["report", "--out", str(out), "--dest",
                                                               str(tmp / "r2")], floor_report, env),
            "compare": measure("compare", cli + ["compare", str(base), str(new), "--json"],
                               [py, "-c", COMPARE_FLOOR, str(base), str(new)], env),
        }
        doc = {"rows": rows, "runs": synthetic_runs + 2, "jobs_per_run": len(jobs()),
               "samples_per_job_in_the_compared_pair": SAMPLES_PER_JOB, "rounds": ROUNDS, "results": results,
               "floor": "a bare python script: pyarrow reads the same Parquet and does the same group-by "
                        "(history: every row by series; report: the rows of the last 60 runs of the run's "
                        "models by series, as its trend lines do; compare: both runs' samples by job)",
               "machine": {"cpu_count": os.cpu_count(), "arch": platform.machine(),
                           "python": platform.python_version(),
                           "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},  # other work on the box
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        OUT.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = OUT.with_suffix(".json.tmp")
        tmp_out.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp_out, OUT)
        print(f"figures: {OUT}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
