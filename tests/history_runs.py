"""Synthetic run folders for the history tests: result documents whose latency samples come from a seeded
generator, saved through the real :class:`controller.fleet.store.RunStore` (so the folders have exactly the
layout ``edgebench run`` writes) with timing statistics computed by the agent's own
:func:`agent.measure.statistics`.

The noise model (per job): a run-to-run level factor (lognormal, sigma ``run_sigma``: thermal state,
background load differ between nights), per-sample jitter (lognormal, sigma ``jitter``) and a few
spikes (``spike_rate`` of the samples take 1.2-2x longer: interrupts, page faults).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import numpy as np

from agent.measure import statistics
from controller.fleet.store import RunStore, result_row

FINGERPRINT = "fp-0123456789ab"
RUNTIME = ("ai-edge-litert", "2.3.0")


@dataclass
class Job:
    """One job of a synthetic run: its identity and the true median latency in ms."""

    model: str
    variant: str = "fp32"
    threads: int = 1
    device: str = "board-0"
    median_ms: float = 5.0
    sha256: str = ""
    fingerprint: str = FINGERPRINT
    runtime_version: str = RUNTIME[1]
    status: str = "ok"
    peak_rss_kb: int = 40_000
    accuracy: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sha256 = self.sha256 or f"{self.model}-{self.variant}".encode().hex().ljust(64, "0")[:64]


@dataclass(frozen=True)
class Noise:
    run_sigma: float = 0.02
    jitter: float = 0.05
    spike_rate: float = 0.03
    samples: int = 50


def samples_ns(rng: np.random.Generator, median_ms: float, noise: Noise) -> list[int]:
    """``noise.samples`` latency samples (ns) around ``median_ms`` from ``rng``."""
    level = median_ms * 1e6 * float(np.exp(rng.normal(0.0, noise.run_sigma)))
    values = level * np.exp(rng.normal(0.0, noise.jitter, noise.samples))
    spikes = rng.random(noise.samples) < noise.spike_rate
    values[spikes] *= rng.uniform(1.2, 2.0, int(spikes.sum()))
    return [int(v) for v in values]


def document(job: Job, index: int, rng: np.random.Generator, noise: Noise) -> dict:
    """A result document (the keys the store reads) for ``job``."""
    job_id = f"{index:03d}-{job.model}-{job.variant}-t{job.threads}"
    doc = {
        "schema_version": 1, "status": job.status, "error": None,
        "job": {"id": job_id, "threads": job.threads,
                "meta": {"model_name": job.model, "variant": job.variant, "sha256": job.sha256,
                         "device_fingerprint": job.fingerprint}},
        "model": {"sha256": job.sha256, "bytes": 1000},
        "runtime": {"name": RUNTIME[0], "version": job.runtime_version, "delegates": []},
        "timing": {}, "memory": {"peak_rss_kb": job.peak_rss_kb, "rss_after_init_kb": job.peak_rss_kb - 100},
        "env": {"arch": "x86_64", "cpu_model": "test", "cpu_count": 2},
    }
    if job.status == "ok":
        stats = statistics(samples_ns(rng, job.median_ms, noise))
        doc["timing"] = {**stats, "init_ms": 1.0, "first_inference_ms": stats["max_ms"]}
    else:
        doc["error"] = {"kind": "crashed", "message": "worker died (signal 11)", "stderr_tail": ""}
    return doc


def make_run(out, jobs: list[Job], seed: int, noise: Noise = Noise(), *, run_id: str | None = None,
             created: datetime.datetime | None = None, kind: str | None = None) -> str:
    """Write a run folder of ``jobs`` under ``out``; return its path."""
    rng = np.random.default_rng(seed)
    info = {"created": (created or datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)).isoformat()}
    if kind:
        info["kind"] = kind
    store = RunStore.create(str(out), info, run_id=run_id)
    for index, job in enumerate(jobs):
        doc = document(job, index, rng, noise)
        store.save_result(job.device, doc)
        if job.accuracy:
            store.set_accuracy(job.device, doc["job"]["id"], job.accuracy)
    store.write_tables()
    store.save_run_info(finished=info["created"], exit_code=0)
    return store.root


def frames(jobs: list[Job], seed: int, run_id: str, noise: Noise = Noise()):
    """(results, samples) DataFrames of a synthetic run, in memory (rows made by the store's
    ``result_row``), for loops over hundreds of runs."""
    import pandas as pd

    from controller.fleet.store import RESULT_COLUMNS, SAMPLE_COLUMNS

    rng = np.random.default_rng(seed)
    rows, samples = [], []
    for index, job in enumerate(jobs):
        doc = document(job, index, rng, noise)
        row = result_row(run_id, job.device, doc)
        row.update(job.accuracy)
        rows.append(row)
        for i, value in enumerate(doc["timing"].get("samples_us") or []):
            samples.append((run_id, job.device, row["job_id"], job.model, job.variant, job.threads, i, value))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS)), pd.DataFrame(samples, columns=list(SAMPLE_COLUMNS))
