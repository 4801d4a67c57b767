"""Scoring a variant against the fp32 reference: the ONE place where drift numbers are computed.

``convert --eval`` (``accuracy.json``), the fleet's per-device accuracy (the run table and
``results.parquet``) and ``inspect --compare`` all call this module, so the same outputs give the same
numbers everywhere.

What the numbers mean:

- per output (matched by name with the fp32 variant's output): the mean per-sample cosine similarity,
  the max abs error and the RMSE, over all samples (first axis = samples);
- a variant's summary is its **worst output**: the lowest cosine, the largest max abs error and the
  largest RMSE over its outputs; ``worst_output`` names the output with the lowest cosine. A model with
  one output has that output's numbers;
- top-1 is the fraction of samples whose highest value in the **first** output is the label (the
  classification-head convention); ``top1_drop_points`` = (fp32 top-1 - this top-1) x 100;
- a variant is **flagged** (drift) when its top-1 is more than ``top1_drop`` points below fp32 or its
  summary cosine is below ``min_cosine``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from controller import defaults


@dataclass(frozen=True)
class Thresholds:
    """When a variant counts as drifted from fp32."""

    top1_drop: float = defaults.TOP1_DROP  #: percentage points of top-1 below fp32
    min_cosine: float = defaults.MIN_COSINE  #: worst output's mean per-sample cosine similarity to fp32

    def __post_init__(self) -> None:
        """Raise UsageError for a threshold that is not a finite number in its range (NaN would flag
        nothing, silently)."""
        from controller.errors import UsageError

        if not isinstance(self.top1_drop, (int, float)) or not math.isfinite(self.top1_drop) \
                or not -100 <= self.top1_drop <= 100:
            raise UsageError(f"--top1-drop must be a number of points between -100 and 100, got {self.top1_drop}")
        if not isinstance(self.min_cosine, (int, float)) or not math.isfinite(self.min_cosine) \
                or not -1 <= self.min_cosine <= 1:
            raise UsageError(f"--min-cosine must be between -1 and 1, got {self.min_cosine}")


class Drift:
    """Accumulates the drift of a candidate tensor from a reference tensor over batches of samples, so
    a caller that sees one sample at a time (``inspect --compare``) and one that has all of them (a
    variant's outputs) compute the same numbers the same way."""

    def __init__(self) -> None:
        self.sq = 0.0
        self.ref_sq = 0.0
        self.count = 0
        self.max_abs = 0.0
        self.cosines: list[float] = []

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> Drift:
        """Add samples (first axis = samples; a 1-D array is one sample). Raises ValueError when the
        shapes differ."""
        ref = np.asarray(reference, dtype=np.float64)
        cand = np.asarray(candidate, dtype=np.float64)
        if ref.shape != cand.shape:
            raise ValueError(f"outputs differ in shape: reference {list(ref.shape)}, "
                             f"candidate {list(cand.shape)}")
        ref2 = ref.reshape(len(ref), -1) if ref.ndim > 1 else ref.reshape(1, -1)
        cand2 = cand.reshape(ref2.shape)
        norm_r = np.linalg.norm(ref2, axis=1)
        norm_c = np.linalg.norm(cand2, axis=1)
        norms = norm_r * norm_c
        dots = np.sum(ref2 * cand2, axis=1)
        # Two all-zero vectors are identical (cosine 1); one zero vector against a non-zero one is 0.
        both_zero = (norm_r == 0) & (norm_c == 0)
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(both_zero, 1.0, 0.0))
        self.cosines.extend(float(c) for c in np.clip(cos, -1.0, 1.0))  # rounding can pass 1
        diff = cand2 - ref2
        self.sq += float(np.sum(diff ** 2))
        self.ref_sq += float(np.sum(ref2 ** 2))
        self.count += diff.size
        if diff.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(diff))))
        return self

    def result(self) -> dict[str, float]:
        """``cosine`` (mean per-sample), ``max_abs``, ``rmse`` and ``rel_rmse`` (RMSE / RMS of the
        reference: comparable across tensors of different magnitude)."""
        rmse = math.sqrt(self.sq / self.count) if self.count else 0.0
        ref_rms = math.sqrt(self.ref_sq / self.count) if self.count else 0.0
        rel = rmse / ref_rms if ref_rms > 0 else (0.0 if rmse == 0 else math.inf)
        return {"cosine": float(np.mean(self.cosines)) if self.cosines else 1.0, "max_abs": self.max_abs,
                "rmse": rmse, "rel_rmse": rel}


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Drift of ``candidate`` from ``reference`` (same shape, first axis = samples): mean per-sample
    cosine similarity, max abs error, RMSE (and relative RMSE). Raises ValueError when the shapes
    differ."""
    return Drift().add(reference, candidate).result()


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


@dataclass
class Score:
    """A variant's accuracy and drift from fp32 (see the module docstring for the meaning). Fields are
    None when they cannot be computed (no labels, no fp32 reference, shapes that do not match)."""

    samples: int = 0
    top1: float | None = None  #: fraction 0..1, first output vs labels
    top1_drop_points: float | None = None
    cosine: float | None = None  #: worst output
    max_abs: float | None = None  #: worst output
    rmse: float | None = None  #: worst output
    worst_output: str | None = None
    per_output: dict[str, dict[str, float]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)  #: why it is flagged (empty: not flagged)

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flagged": self.flagged}


def score(candidate: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray] | None = None,
          labels: np.ndarray | None = None, reference_top1: float | None = None,
          thresholds: Thresholds | None = None, is_reference: bool = False) -> Score:
    """Score ``candidate`` outputs (output name -> N x ... array, in the model's output order) against
    the fp32 ``reference`` outputs of the same inputs, and ``labels`` (N integers) when given.

    ``reference_top1`` is fp32's top-1 (for the drop); pass the reference itself as ``candidate`` to
    score fp32 (cosine 1, drop 0); ``is_reference`` (an fp32 job) is never flagged. Outputs missing from the reference or of another shape are left out
    of the summary, and said in ``reasons`` only if nothing could be compared.
    """
    names = list(candidate)
    result = Score(samples=len(candidate[names[0]]) if names else 0)
    if labels is not None and names:
        first = np.asarray(candidate[names[0]])
        if first.ndim >= 1 and len(first) == len(labels):
            result.top1 = top1(first, labels)
            if reference_top1 is not None:
                result.top1_drop_points = (reference_top1 - result.top1) * 100.0
    if reference is not None:
        for name in names:
            ref = reference.get(name)
            if ref is not None and np.shape(ref) == np.shape(candidate[name]):
                metrics = compare(ref, candidate[name])
                result.per_output[name] = metrics
        if result.per_output:
            worst = min(result.per_output, key=lambda n: (result.per_output[n]["cosine"], n))
            result.worst_output = worst
            result.cosine = result.per_output[worst]["cosine"]
            result.max_abs = max(m["max_abs"] for m in result.per_output.values())
            result.rmse = max(m["rmse"] for m in result.per_output.values())
    if not is_reference:
        result.reasons = drift_reasons(result.top1_drop_points, result.cosine, thresholds or Thresholds())
    return result


def drift_reasons(top1_drop_points: float | None, cosine: float | None, thresholds: Thresholds) -> list[str]:
    """Why a variant with these numbers (None = unknown) counts as drifted; empty when it does not."""
    reasons = []
    if top1_drop_points is not None and top1_drop_points > thresholds.top1_drop:
        reasons.append(f"top-1 {top1_drop_points:.1f} points below fp32 (threshold {thresholds.top1_drop:g})")
    if cosine is not None and cosine < thresholds.min_cosine:
        reasons.append(f"cosine {cosine:.4f} to fp32 < {thresholds.min_cosine:g}")
    return reasons


def drift_flag(metrics: Mapping[str, Any], thresholds: Thresholds) -> bool:
    """True when ``metrics`` (keys ``top1_drop_points``, ``cosine``; None = unknown) passes a threshold."""
    return bool(drift_reasons(metrics.get("top1_drop_points"), metrics.get("cosine"), thresholds))


def load_outputs(path: str, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The dequantized outputs saved by the agent (``save_outputs`` .npz): output name -> float32 array,
    in the file's (the model's) output order, or in ``names`` order when given. Raw integer values
    (``raw/<name>``) are left out."""
    with np.load(path, allow_pickle=False) as data:
        keys = names or [k for k in data.files if not k.startswith("raw/")]
        return {k: np.asarray(data[k], dtype=np.float32) for k in keys}
