"""Accuracy of each variant on a labelled eval set, and its drift from the fp32 variant.

The outputs come from the agent (:func:`agent.runner.run_job` with ``inputs`` and ``save_outputs``),
so they are computed exactly as on a device: float inputs quantized with the input's (scale,
zero_point), outputs dequantized. Metrics against the fp32 outputs (all outputs of a sample,
flattened): mean per-sample cosine similarity, max abs error, RMSE; with labels, top-1 of the first
output. A variant is flagged (:func:`drift_flag`) when its top-1 is more than ``top1_drop`` points
below fp32's (default 2) or its mean cosine is below ``min_cosine`` (default 0.99).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from controller.errors import InputError
from controller.manifest import Manifest


@dataclass(frozen=True)
class Thresholds:
    """When a variant counts as drifted from fp32."""

    top1_drop: float = 2.0  #: percentage points of top-1 below fp32
    min_cosine: float = 0.99  #: mean per-sample cosine similarity to the fp32 outputs


@dataclass
class VariantAccuracy:
    """One row of the accuracy table. Metrics are None when they cannot be computed (no labels, no
    fp32 reference, or the run failed: then ``status``/``error`` say why)."""

    variant: str
    status: str = "ok"
    error: str | None = None
    samples: int = 0
    top1: float | None = None  #: fraction 0..1
    top1_drop_points: float | None = None  #: (fp32 top-1 - this top-1) x 100
    cosine: float | None = None
    max_abs: float | None = None
    rmse: float | None = None
    flagged: bool = False
    reasons: list[str] = field(default_factory=list)
    runtime: str | None = None


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


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Drift of ``candidate`` from ``reference`` (same shape, first axis = samples): mean per-sample
    cosine similarity, max abs error, RMSE. Raises ValueError when the shapes differ."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"outputs differ in shape: reference {list(ref.shape)}, candidate {list(cand.shape)}")
    ref2 = ref.reshape(len(ref), -1) if ref.ndim > 1 else ref.reshape(1, -1)
    cand2 = cand.reshape(ref2.shape)
    dots = np.sum(ref2 * cand2, axis=1)
    norms = np.linalg.norm(ref2, axis=1) * np.linalg.norm(cand2, axis=1)
    # Two all-zero vectors are identical (cosine 1); one zero vector against a non-zero one is 0.
    both_zero = (np.linalg.norm(ref2, axis=1) == 0) & (np.linalg.norm(cand2, axis=1) == 0)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(both_zero, 1.0, 0.0))
    diff = cand2 - ref2
    return {"cosine": float(np.mean(cos)), "max_abs": float(np.max(np.abs(diff))) if diff.size else 0.0,
            "rmse": float(math.sqrt(np.mean(diff ** 2))) if diff.size else 0.0}


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction (0..1) of samples whose highest output is the label. ``outputs``: N x ... (flattened
    per sample). Raises ValueError when the counts differ."""
    out = np.asarray(outputs).reshape(len(outputs), -1)
    lab = np.asarray(labels).reshape(-1)
    if len(out) != len(lab):
        raise ValueError(f"{len(out)} outputs but {len(lab)} labels")
    if not len(lab):
        return 0.0
    return float(np.mean(np.argmax(out, axis=1) == lab))


def drift_flag(metrics: dict[str, Any], thresholds: Thresholds) -> bool:
    """True when ``metrics`` (keys ``top1_drop_points``, ``cosine``; None = unknown) passes a threshold."""
    return bool(_drift_reasons(metrics, thresholds))


def _drift_reasons(metrics: dict[str, Any], thresholds: Thresholds) -> list[str]:
    reasons = []
    drop = metrics.get("top1_drop_points")
    if drop is not None and drop > thresholds.top1_drop:
        reasons.append(f"top-1 {drop:.1f} points below fp32 (threshold {thresholds.top1_drop:g})")
    cos = metrics.get("cosine")
    if cos is not None and cos < thresholds.min_cosine:
        reasons.append(f"cosine {cos:.4f} to fp32 < {thresholds.min_cosine:g}")
    return reasons


def evaluate(manifest: Manifest, thresholds: Thresholds = Thresholds(), runtime: str = "auto",
             progress: Callable[[str, dict], None] | None = None, timeout: float = 600.0) -> AccuracyReport:
    """Run every variant of ``manifest`` on its eval set (``manifest.eval``) on this machine.

    Promises one row per variant in manifest order; a variant whose run fails is a row with status and
    error (the others are still measured). Raises InputError when the manifest names no eval file.
    """
    from agent.job import JobSpec
    from agent.runner import run_job

    eval_path = manifest.eval_path
    if eval_path is None or not eval_path.is_file():
        raise InputError(f"{manifest.path}: names no eval data file (or it is missing); run edgebench "
                         "convert with --eval DATA.npz")
    with np.load(eval_path, allow_pickle=False) as data:
        labels = np.asarray(data["y"]) if "y" in data.files else None
        samples = len(data["x"])
    say = progress or (lambda event, info: None)
    outputs: dict[str, np.ndarray] = {}
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
            if doc["status"] != "ok" or not target.is_file():
                err = doc.get("error") or {}
                row.status = doc["status"] if doc["status"] != "ok" else "error"
                row.error = f"{err.get('kind', 'no_outputs')}: {err.get('message', 'no outputs were saved')}"
                rows.append(row)
                continue
            with np.load(target, allow_pickle=False) as out:
                names = [o["name"] for o in doc["model"]["outputs"]]
                per_output = [np.asarray(out[n], dtype=np.float64).reshape(samples, -1) for n in names]
            outputs[name] = np.concatenate(per_output, axis=1)
            if labels is not None:
                row.top1 = top1(per_output[0], labels)
            rows.append(row)
    reference = outputs.get("fp32")
    ref_row = next((r for r in rows if r.variant == "fp32"), None)
    for row in rows:
        if row.status != "ok":
            continue
        if reference is not None and row.variant != "fp32":
            metrics = compare(reference, outputs[row.variant])
            row.cosine, row.max_abs, row.rmse = metrics["cosine"], metrics["max_abs"], metrics["rmse"]
            if row.top1 is not None and ref_row is not None and ref_row.top1 is not None:
                row.top1_drop_points = (ref_row.top1 - row.top1) * 100.0
            row.reasons = _drift_reasons(asdict(row), thresholds)
            row.flagged = bool(row.reasons)
        elif row.variant == "fp32":
            row.cosine, row.max_abs, row.rmse, row.top1_drop_points = 1.0, 0.0, 0.0, 0.0
    return AccuracyReport(eval_file=str(eval_path), samples=samples, labels=labels is not None,
                          thresholds=thresholds, rows=rows)


def save(report: AccuracyReport, path: Path) -> Path:
    """Write the report as JSON (``accuracy.json`` next to the manifest), atomically."""
    from controller.store import write_json

    write_json(str(path), report.to_dict())
    return path
