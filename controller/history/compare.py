"""Compare two runs job by job: what regressed, what improved, what cannot be compared and why.

Jobs are matched by (device, model, variant, threads) and are comparable only when the device
fingerprint, the model's sha256 and the runtime name + version are the same on both sides; otherwise the
job is listed as *not comparable* with the reason (model changed, runtime upgraded, device changed).

A comparable pair is judged on four things, each a regression of its own kind:

- ``latency``: a two-sided Mann-Whitney U test on the raw samples is significant (p < ``alpha``) AND
  the p50 ratio new/base is at least ``threshold`` (asv's rule: significant *and* big enough). The
  symmetric case (base/new >= threshold, significant) is an improvement.
- ``accuracy``: top-1 fell by more than ``top1_drop`` percentage points from the base run.
- ``drift``: the variant now counts as drifted from fp32 by the scoring rule
  (:func:`controller.variants.scoring.drift_reasons` with ``top1_drop`` / ``min_cosine``) and did not in
  the base run.
- ``memory``: peak RSS grew by at least ``memory_ratio`` and by at least ``memory_min_kb``.
- ``failed``: the job ran ok in the base run and errored, crashed or timed out in the new one.

Everything here works on DataFrames (results + samples), so the nightly can compare against a baseline
assembled from several earlier runs; :func:`compare_runs` is the two-folder entry point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from controller import defaults
from controller.fleet.store import present
from controller.history.mannwhitney import mann_whitney_u

if TYPE_CHECKING:
    import pandas as pd

KEY = ("device", "model", "variant", "threads")
#: what must be equal for two jobs to be comparable, and how a difference is explained
COMPARABLE = (
    ("model_sha256", "model changed (sha256 {base:.12} -> {new:.12})"),
    ("runtime", "runtime changed ({base} -> {new})"),
    ("runtime_version", "runtime version changed ({base} -> {new})"),
    ("device_fingerprint", "device fingerprint changed ({base} -> {new}: hardware, kernel or python differ)"),
)
FAILED_STATUSES = ("error", "crashed", "timeout")
REGRESSION_KINDS = ("latency", "accuracy", "drift", "memory", "failed")


@dataclass(frozen=True)
class Limits:
    """When a difference counts. Defaults: p < 0.01 and 10 % on p50; the accuracy defaults are the
    scoring thresholds (controller/defaults.py: top-1 drop 2 points, cosine 0.99)."""

    threshold: float = 1.10  #: p50 ratio (new/base for a regression, base/new for an improvement)
    alpha: float = 0.01  #: significance level of the Mann-Whitney U test
    top1_drop: float = defaults.TOP1_DROP  #: percentage points of top-1 lost
    min_cosine: float = defaults.MIN_COSINE  #: cosine to fp32 below this is drift
    memory_ratio: float = 1.10  #: peak RSS new/base
    memory_min_kb: float = 1024.0  #: and at least this much growth (a few pages of allocator noise are not)

    def check(self) -> None:
        """Raise UsageError naming the bad limit."""
        from controller.errors import UsageError

        if not self.threshold > 1.0:
            raise UsageError(f"--threshold must be > 1 (a ratio such as 1.10), got {self.threshold:g}")
        if not 0.0 < self.alpha < 1.0:
            raise UsageError(f"--alpha must be between 0 and 1, got {self.alpha:g}")
        if self.top1_drop < 0 or not 0.0 <= self.min_cosine <= 1.0:
            raise UsageError("--top1-drop must be >= 0 and --min-cosine between 0 and 1")
        if not self.memory_ratio > 1.0:
            raise UsageError(f"--memory-ratio must be > 1, got {self.memory_ratio:g}")


@dataclass
class Pair:
    """One job present and comparable in both runs, with its verdict."""

    device: str
    model: str
    variant: str
    threads: int
    base_run: str
    new_run: str
    base_job: str
    new_job: str
    base_p50_ms: float | None
    new_p50_ms: float | None
    ratio: float | None  #: new p50 / base p50
    p_value: float | None  #: Mann-Whitney two-sided; None when either side had too few samples
    base_samples: int
    new_samples: int
    verdict: str = "unchanged"  #: regressed | improved | unchanged | untested (no samples to test)
    kinds: list[str] = field(default_factory=list)  #: regression kinds (REGRESSION_KINDS)
    reasons: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.device, self.model, self.variant, self.threads)


@dataclass
class Unpaired:
    """A job that could not be compared: ``new`` (only in NEW), ``missing`` (only in BASE) or
    ``not_comparable`` (in both, but the reason says why they cannot be compared)."""

    device: str
    model: str
    variant: str
    threads: int
    kind: str
    reason: str


@dataclass
class Comparison:
    base: str
    new: str
    limits: Limits
    pairs: list[Pair] = field(default_factory=list)
    unpaired: list[Unpaired] = field(default_factory=list)

    @property
    def regressions(self) -> list[Pair]:
        return [p for p in self.pairs if p.verdict == "regressed"]

    @property
    def improvements(self) -> list[Pair]:
        return [p for p in self.pairs if p.verdict == "improved"]

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for p in self.pairs:
            counts[p.verdict] = counts.get(p.verdict, 0) + 1
        for u in self.unpaired:
            counts[u.kind] = counts.get(u.kind, 0) + 1
        return {"base": self.base, "new": self.new, "limits": asdict(self.limits), "counts": counts,
                "pairs": [asdict(p) for p in self.pairs], "unpaired": [asdict(u) for u in self.unpaired]}


def compare_runs(base_dir: str, new_dir: str, limits: Limits = Limits()) -> Comparison:
    """Compare two run folders. Raises InputError when either is not a run folder."""
    from controller.fleet.store import load_results, load_samples

    base, new = load_results(base_dir), load_results(new_dir)
    return compare_frames(base, load_samples(base_dir), new, load_samples(new_dir), limits,
                          base_name=base_dir, new_name=new_dir)


def compare_frames(base: pd.DataFrame, base_samples: pd.DataFrame, new: pd.DataFrame,
                   new_samples: pd.DataFrame, limits: Limits = Limits(), *, base_name: str = "BASE",
                   new_name: str = "NEW") -> Comparison:
    """Compare result rows (results.parquet columns; ``base`` may mix several runs, each row keeps its
    ``run_id``) using the raw samples (samples.parquet columns) of the same runs."""
    result = Comparison(base=base_name, new=new_name, limits=limits)
    base_rows = _by_key(base)
    new_rows = _by_key(new)
    base_lookup = _sample_lookup(base_samples)
    new_lookup = _sample_lookup(new_samples)
    for key in sorted(set(base_rows) | set(new_rows), key=lambda k: tuple(str(v) for v in k)):
        b, n = base_rows.get(key), new_rows.get(key)
        if b is None or n is None:
            row = n if b is None else b
            kind = "new" if b is None else "missing"
            reason = "only in NEW" if b is None else "not in NEW"
            if row["status"] != "ok":
                reason += f" ({row['status']}: {row.get('error') or 'no reason recorded'})"
            result.unpaired.append(Unpaired(*key, kind=kind, reason=reason))
            continue
        why = _not_comparable(b, n)
        if why:
            result.unpaired.append(Unpaired(*key, kind="not_comparable", reason=why))
            continue
        result.pairs.append(_judge(key, b, n, base_lookup, new_lookup, limits))
    return result


def _by_key(frame: pd.DataFrame) -> dict[tuple, dict[str, Any]]:
    """Rows by (device, model, variant, threads); a model given twice keeps its first job."""
    rows: dict[tuple, dict[str, Any]] = {}
    for row in frame.to_dict("records"):
        key = (row["device"], row["model"], row["variant"], _int(row["threads"]))
        rows.setdefault(key, row)
    return rows


def _sample_lookup(samples: pd.DataFrame) -> dict[tuple[str, str, str], np.ndarray]:
    """(run_id, device, job_id) -> latency samples in microseconds."""
    if samples is None or samples.empty:
        return {}
    values = samples["latency_us"].to_numpy(dtype=np.float64)
    return {key: values[idx] for key, idx in samples.groupby(["run_id", "device", "job_id"], sort=False).indices.items()}


def _not_comparable(b: dict[str, Any], n: dict[str, Any]) -> str | None:
    if b["status"] != "ok" and n["status"] != "ok":
        return f"failed in both (BASE {b['status']}, NEW {n['status']}: {n.get('error') or 'no reason'})"
    if b["status"] != "ok":
        return f"BASE job {b['status']} ({b.get('error') or 'no reason'}): nothing to compare against"
    if n["status"] not in ("ok", *FAILED_STATUSES):
        return f"NEW job {n['status']}: {n.get('error') or 'no reason recorded'}"
    for column, template in COMPARABLE:
        bv, nv = b.get(column), n.get(column)
        if present(bv) and present(nv) and bv != nv:
            return template.format(base=bv, new=nv)
    return None  # comparable (a NEW job that ran and failed is a regression of kind "failed")


def _judge(key: tuple, b: dict[str, Any], n: dict[str, Any], base_lookup: dict, new_lookup: dict,
           limits: Limits) -> Pair:
    base_s = base_lookup.get((b["run_id"], b["device"], b["job_id"]), np.empty(0))
    new_s = new_lookup.get((n["run_id"], n["device"], n["job_id"]), np.empty(0))
    pair = Pair(*key, base_run=b["run_id"], new_run=n["run_id"], base_job=b["job_id"], new_job=n["job_id"],
                base_p50_ms=_float(b.get("p50_ms")), new_p50_ms=_float(n.get("p50_ms")), ratio=None,
                p_value=None, base_samples=len(base_s), new_samples=len(new_s))
    if n["status"] in FAILED_STATUSES:
        pair.kinds.append("failed")
        pair.reasons.append(f"ok in BASE, {n['status']} in NEW: {n.get('error') or 'no reason recorded'}")
        pair.verdict = "regressed"
        return pair
    improved = _latency(pair, base_s, new_s, limits)
    _accuracy(pair, b, n, limits)
    _memory(pair, b, n, limits)
    if pair.kinds:
        pair.verdict = "regressed"
    elif improved:
        pair.verdict = "improved"
    elif pair.p_value is None:
        pair.verdict = "untested"
    return pair


def _latency(pair: Pair, base_s: np.ndarray, new_s: np.ndarray, limits: Limits) -> bool:
    """Fill ratio and p-value; add a latency regression. Returns True for a latency improvement."""
    if pair.base_p50_ms and pair.new_p50_ms:
        pair.ratio = pair.new_p50_ms / pair.base_p50_ms
    test = mann_whitney_u(base_s, new_s)
    if test is None:
        pair.reasons.append(f"too few raw samples to test (BASE {len(base_s)}, NEW {len(new_s)})")
        return False
    pair.p_value = test.p
    if pair.ratio is None or test.p >= limits.alpha:
        return False
    if pair.ratio >= limits.threshold:
        pair.kinds.append("latency")
        pair.reasons.append(f"p50 {pair.base_p50_ms:.3f} -> {pair.new_p50_ms:.3f} ms (x{pair.ratio:.2f}, "
                            f"p={test.p:.2g})")
    elif 1.0 / pair.ratio >= limits.threshold:
        pair.reasons.append(f"faster: p50 {pair.base_p50_ms:.3f} -> {pair.new_p50_ms:.3f} ms "
                            f"(x{pair.ratio:.2f}, p={test.p:.2g})")
        return True
    return False


def _accuracy(pair: Pair, b: dict[str, Any], n: dict[str, Any], limits: Limits) -> None:
    bt, nt = _float(b.get("top1")), _float(n.get("top1"))
    if bt is not None and nt is not None and (bt - nt) * 100.0 > limits.top1_drop:
        pair.kinds.append("accuracy")
        pair.reasons.append(f"top-1 {bt:.1%} -> {nt:.1%} ({(bt - nt) * 100:.1f} points > {limits.top1_drop:g})")
    from controller.variants.scoring import Thresholds, drift_reasons

    thresholds = Thresholds(limits.top1_drop, limits.min_cosine)
    base_drift = drift_reasons(_float(b.get("top1_drop_points")), _float(b.get("cosine_vs_fp32")), thresholds)
    new_drift = drift_reasons(_float(n.get("top1_drop_points")), _float(n.get("cosine_vs_fp32")), thresholds)
    if new_drift and not base_drift:
        pair.kinds.append("drift")
        pair.reasons += [f"drift from fp32: {reason}" for reason in new_drift]


def _memory(pair: Pair, b: dict[str, Any], n: dict[str, Any], limits: Limits) -> None:
    bm, nm = _float(b.get("peak_rss_kb")), _float(n.get("peak_rss_kb"))
    if bm and nm and nm / bm >= limits.memory_ratio and nm - bm >= limits.memory_min_kb:
        pair.kinds.append("memory")
        pair.reasons.append(f"peak RSS {bm / 1024:.1f} -> {nm / 1024:.1f} MiB (x{nm / bm:.2f})")




def _float(value: Any) -> float | None:
    return float(value) if present(value) else None


def _int(value: Any) -> int | None:
    return int(value) if present(value) else None
