"""Accuracy of each variant of a model family on its labelled eval set, on this machine (``convert
--eval``), scored against the fp32 variant with :func:`controller.variants.scoring.score`.

The outputs come from the agent (:func:`agent.runner.run_job` with ``inputs`` and ``save_outputs``), so
they are computed exactly as on a device: float inputs quantized with the input's (scale, zero_point),
outputs dequantized.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.job import JobSpec
from controller.errors import InputError
from controller.variants.manifest import Manifest
from controller.variants.scoring import Score, Thresholds, load_outputs, score


@dataclass
class VariantAccuracy:
    """One row of the accuracy table: a variant's :class:`~controller.variants.scoring.Score` fields
    (None when they cannot be computed), or, when its run failed, ``status`` and ``error``."""

    variant: str
    status: str = "ok"
    error: str | None = None
    samples: int = 0
    top1: float | None = None  #: fraction 0..1 (first output)
    top1_drop_points: float | None = None  #: (fp32 top-1 - this top-1) x 100
    cosine: float | None = None  #: worst output's mean per-sample cosine to fp32
    max_abs: float | None = None  #: worst output
    rmse: float | None = None  #: worst output
    worst_output: str | None = None
    per_output: dict[str, dict[str, float]] = field(default_factory=dict)
    flagged: bool = False
    reasons: list[str] = field(default_factory=list)
    runtime: str | None = None

    def take(self, result: Score) -> None:
        """Copy the scored numbers into this row."""
        for key in ("samples", "top1", "top1_drop_points", "cosine", "max_abs", "rmse", "worst_output",
                    "per_output", "reasons"):
            setattr(self, key, getattr(result, key))
        self.flagged = result.flagged


@dataclass
class AccuracyReport:
    eval_file: str
    samples: int
    labels: bool
    thresholds: Thresholds
    rows: list[VariantAccuracy]

    def to_dict(self) -> dict[str, Any]:
        return {"eval_file": self.eval_file, "samples": self.samples, "labels": self.labels,
                "thresholds": asdict(self.thresholds), "variants": [asdict(r) for r in self.rows]}

    @property
    def flagged(self) -> list[str]:
        return [r.variant for r in self.rows if r.flagged]


def evaluate(manifest: Manifest, thresholds: Thresholds | None = None, runtime: str = "auto",
             progress: Callable[[str, dict], None] | None = None, timeout: float = JobSpec.timeout) -> AccuracyReport:
    """Run every variant of ``manifest`` on its eval set (``manifest.eval``) on this machine and score
    each against the fp32 variant (:func:`controller.variants.scoring.score`).

    Promises one row per variant in manifest order; a variant whose run fails is a row with status and
    error (the others are still measured). Raises InputError when the manifest names no eval file.
    """
    from agent.runner import run_job

    thresholds = thresholds or Thresholds()
    eval_path = manifest.eval_path
    if eval_path is None or not eval_path.is_file():
        raise InputError(f"{manifest.path}: names no eval data file (or it is missing); run edgebench "
                         "convert with --eval DATA.npz")
    with np.load(eval_path, allow_pickle=False) as data:
        labels = np.asarray(data["y"]) if "y" in data.files else None
        samples = len(data["x"])
    say = progress or (lambda event, info: None)
    outputs: dict[str, dict[str, np.ndarray]] = {}
    rows: list[VariantAccuracy] = []
    with tempfile.TemporaryDirectory(prefix="edgebench-eval-") as tmp:
        for name, variant in manifest.variants.items():
            say("eval", {"variant": name})
            target = Path(tmp) / f"{name}.npz"
            spec = JobSpec(model=str(variant.path), id=f"eval-{name}", runtime=runtime, warmup=0,
                           warmup_min_seconds=0.0, runs=1, min_seconds=0.0, max_seconds=timeout,
                           timeout=timeout, inputs=str(eval_path), save_outputs=str(target),
                           meta={"variant": name, "model_name": manifest.name, "purpose": "accuracy"})
            doc = run_job(spec)
            row = VariantAccuracy(variant=name, samples=samples,
                                  runtime=f"{doc['runtime'].get('name')} {doc['runtime'].get('version')}")
            rows.append(row)
            if doc["status"] != "ok" or not target.is_file():
                err = doc.get("error") or {}
                row.status = doc["status"] if doc["status"] != "ok" else "error"
                row.error = f"{err.get('kind', 'no_outputs')}: {err.get('message', 'no outputs were saved')}"
                continue
            outputs[name] = load_outputs(str(target), [o["name"] for o in doc["model"]["outputs"]])
    reference = outputs.get("fp32")
    ref_top1 = score(reference, labels=labels).top1 if reference is not None else None
    for row in rows:
        if row.status == "ok":
            row.take(score(outputs[row.variant], reference, labels, ref_top1, thresholds,
                           is_reference=row.variant == "fp32"))
    return AccuracyReport(eval_file=str(eval_path), samples=samples, labels=labels is not None,
                          thresholds=thresholds, rows=rows)


def save(report: AccuracyReport, path: Path) -> Path:
    """Write the report as JSON (``accuracy.json`` next to the manifest), atomically."""
    from controller.fleet.store import write_json

    write_json(str(path), report.to_dict())
    return path
