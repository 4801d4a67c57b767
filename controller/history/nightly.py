"""What a nightly concludes from its run: compare with the baseline, re-measure what looks changed,
look for change points over the whole history, and write regressions.json + regressions.md.

The measuring itself is the fleet run (``edgebench run``'s); this module gets its run folder and a
``remeasure`` callable that re-runs given jobs (device, model, variant, threads) in a fresh run folder.

Rules:

- A suspected change (regression of any kind, or improvement) is re-measured after ``cooldown`` seconds
  - fresh worker processes, a different moment - and compared with the same baseline again. Only a
  change seen again, of the same kind and direction, is *confirmed*; re-runs in the same breath share
  the same bias, hence the cooldown.
- Only confirmed regressions are reported as regressions (exit 5). Unconfirmed ones are listed as such.
- Which nights may serve as a later baseline is decided here (``baseline_ok`` per job in
  regressions.json; the rule is in :mod:`controller.history.nightly_runs`).
- Change points: per comparable series (device, model, variant, threads, model sha256, device
  fingerprint, runtime + version), the p50 of each nightly, latest ``window`` nights, E-divisive
  (:mod:`controller.history.changepoints`); a change point is listed when the level moved by at least
  the compare threshold.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from controller.defaults import NIGHTLY_WINDOW
from controller.history.changepoints import e_divisive
from controller.history.compare import Comparison, Limits, Pair, compare_frames
from controller.history.nightly_runs import REGRESSIONS_JSON, Baseline, find_baseline

log = logging.getLogger(__name__)

REGRESSIONS_MD = "regressions.md"
SERIES_KEY = ("device", "model", "variant", "threads", "model_sha256", "device_fingerprint", "runtime",
              "runtime_version")

#: re-runs jobs (device, model, variant, threads) after the cooldown; returns the new run folder, or None
Remeasure = Callable[[list[tuple[str, str, str, int]]], "str | None"]


@dataclass
class Finding:
    """A suspected change and what the re-measure said about it."""

    device: str
    model: str
    variant: str
    threads: int
    verdict: str  #: regressed | improved (as first measured)
    kinds: list[str]
    reasons: list[str]
    base_run: str
    ratio: float | None
    p_value: float | None
    confirmed: bool = False
    remeasure_ratio: float | None = None
    remeasure_p_value: float | None = None
    remeasure_note: str = ""


@dataclass
class NightlyOutcome:
    run_id: str
    run_dir: str
    baseline_runs: list[str]
    last_comparable: str | None
    comparison: Comparison
    findings: list[Finding] = field(default_factory=list)
    remeasure_dir: str | None = None
    change_points: list[dict[str, Any]] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)

    @property
    def confirmed_regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict == "regressed" and f.confirmed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "run_dir": self.run_dir,
            "baseline": {"runs": self.baseline_runs, "last_comparable": self.last_comparable},
            "limits": asdict(self.comparison.limits),
            "regressions": [asdict(f) for f in self.confirmed_regressions],
            "not_confirmed": [asdict(f) for f in self.findings if not f.confirmed],
            "improvements": [asdict(f) for f in self.findings if f.verdict == "improved" and f.confirmed],
            "remeasure_dir": self.remeasure_dir,
            "change_points": self.change_points,
            "comparison": self.comparison.to_dict(),
            "keys": self.keys,
        }


def evaluate(run_dir: str, earlier: list, limits: Limits, remeasure: Remeasure | None, cooldown: float,
             history: Any = None, *, sleep: Callable[[float], None] = time.sleep, window: int = NIGHTLY_WINDOW,
             seed: int = 0) -> NightlyOutcome:
    """Judge the nightly in ``run_dir`` against the ``earlier`` nightlies (oldest first, created before
    it); re-measure suspects through ``remeasure`` after ``cooldown`` seconds; find change points in
    ``history`` (a results frame of every nightly with a ``created`` column, or None to skip)."""
    from controller.fleet.store import load_results, load_run_info, load_samples

    new = load_results(run_dir)
    new_samples = load_samples(run_dir)
    run_id = load_run_info(run_dir).get("run_id", os.path.basename(run_dir))
    baseline: Baseline = find_baseline(new, earlier)
    comparison = compare_frames(baseline.results, baseline.samples, new, new_samples, limits,
                                base_name=baseline.last_comparable or "(no earlier nightly)", new_name=run_dir)
    outcome = NightlyOutcome(run_id, run_dir, baseline.runs, baseline.last_comparable, comparison)
    suspects = [p for p in comparison.pairs if p.verdict in ("regressed", "improved")]
    outcome.findings = [_finding(p) for p in suspects]
    if suspects and remeasure is not None:
        log.info("%d suspected change(s); re-measuring after a %g s cooldown", len(suspects), cooldown)
        sleep(cooldown)
        outcome.remeasure_dir = remeasure([p.key for p in suspects])
        _confirm(outcome, baseline, limits)
    elif suspects:
        for finding in outcome.findings:
            finding.remeasure_note = "not re-measured (--no-remeasure)"
    outcome.keys = _keys(outcome)
    if history is not None and len(history):
        outcome.change_points = change_points(history, limits, window=window, seed=seed)
    return outcome


def _finding(pair: Pair) -> Finding:
    return Finding(pair.device, pair.model, pair.variant, pair.threads, pair.verdict, list(pair.kinds),
                   list(pair.reasons), pair.base_run, pair.ratio, pair.p_value)


def _confirm(outcome: NightlyOutcome, baseline: Baseline, limits: Limits) -> None:
    """Compare the re-measure with the same baseline; a finding is confirmed when the same verdict (and,
    for a regression, one of the same kinds) shows again."""
    if not outcome.remeasure_dir:
        for finding in outcome.findings:
            finding.remeasure_note = "re-measure did not run"
        return
    from controller.fleet.store import load_results, load_samples

    again = compare_frames(baseline.results, baseline.samples, load_results(outcome.remeasure_dir),
                           load_samples(outcome.remeasure_dir), limits)
    by_key = {p.key: p for p in again.pairs}
    for finding in outcome.findings:
        pair = by_key.get((finding.device, finding.model, finding.variant, finding.threads))
        if pair is None:
            reason = next((u.reason for u in again.unpaired if (u.device, u.model, u.variant, u.threads)
                           == (finding.device, finding.model, finding.variant, finding.threads)), "no result")
            finding.remeasure_note = f"re-measure gave nothing to compare: {reason}"
            continue
        finding.remeasure_ratio, finding.remeasure_p_value = pair.ratio, pair.p_value
        if finding.verdict == "regressed":
            finding.confirmed = pair.verdict == "regressed" and bool(set(pair.kinds) & set(finding.kinds))
        else:
            finding.confirmed = pair.verdict == "improved"
        finding.remeasure_note = "; ".join(pair.reasons) or f"re-measure {pair.verdict}"


def _keys(outcome: NightlyOutcome) -> list[dict[str, Any]]:
    """Every job of this night with its verdict and whether it may serve as a later baseline."""
    findings = {(f.device, f.model, f.variant, f.threads): f for f in outcome.findings}
    keys = []
    for pair in outcome.comparison.pairs:
        finding = findings.get(pair.key)
        if finding is None:
            verdict, ok = pair.verdict, "failed" not in pair.kinds
        else:
            verdict = f"{finding.verdict} ({'confirmed' if finding.confirmed else 'not confirmed'})"
            ok = finding.confirmed  # a confirmed change is the new level; a fluke or lone improvement is not
        keys.append({"device": pair.device, "model": pair.model, "variant": pair.variant, "threads": pair.threads,
                     "verdict": verdict, "baseline_ok": ok})
    for item in outcome.comparison.unpaired:
        if item.kind != "missing":
            keys.append({"device": item.device, "model": item.model, "variant": item.variant,
                         "threads": item.threads, "verdict": item.kind, "baseline_ok": True})
    return keys


def change_points(history, limits: Limits, *, window: int = NIGHTLY_WINDOW, seed: int = 0) -> list[dict[str, Any]]:
    """Change points of the p50 series of every comparable job over the nightlies in ``history`` (results
    rows with a ``created`` column), latest ``window`` nights. Only level changes of at least the compare
    threshold are listed."""
    ok = history[history["status"] == "ok"].dropna(subset=["p50_ms"])
    found = []
    for key, series in ok.groupby(list(SERIES_KEY), dropna=False, sort=True):
        series = series.sort_values("created").tail(window)
        values = series["p50_ms"].to_numpy(dtype=float)
        for point in e_divisive(values, alpha=limits.alpha, seed=seed):
            if not (point.ratio >= limits.threshold or point.ratio <= 1.0 / limits.threshold):
                continue
            found.append({**dict(zip(("device", "model", "variant", "threads"), key[:4])),
                          "threads": int(key[3]), "run_id": str(series["run_id"].iloc[point.index]),
                          "created": str(series["created"].iloc[point.index]), "before_ms": point.before,
                          "after_ms": point.after, "ratio": point.ratio, "p_value": point.p_value,
                          "direction": "slower" if point.ratio > 1 else "faster", "nights": len(values)})
    return found


def write_outcome(outcome: NightlyOutcome, exit_code: int) -> tuple[str, str]:
    """Write regressions.json and regressions.md into the run folder; return their paths."""
    from controller.fleet.store import atomic_write, write_json

    json_path = os.path.join(outcome.run_dir, REGRESSIONS_JSON)
    write_json(json_path, {**outcome.to_dict(), "exit_code": exit_code})
    md_path = os.path.join(outcome.run_dir, REGRESSIONS_MD)
    atomic_write(md_path, markdown(outcome, exit_code).encode("utf-8"))
    return json_path, md_path


def markdown(outcome: NightlyOutcome, exit_code: int) -> str:
    """regressions.md: what a person reads in the morning."""
    c = outcome.comparison
    lines = [f"# Nightly {outcome.run_id}", ""]
    base = os.path.basename(outcome.last_comparable) if outcome.last_comparable else "none (first nightly)"
    lines += [f"Baseline: last comparable nightly {base}"
              + (f" (some jobs from {', '.join(outcome.baseline_runs[1:])})" if len(outcome.baseline_runs) > 1 else ""),
              (f"Rule: Mann-Whitney p < {c.limits.alpha:g} and p50 ratio >= {c.limits.threshold:g}; top-1 drop > "
              f"{c.limits.top1_drop:g} points; cosine < {c.limits.min_cosine:g}; peak memory x{c.limits.memory_ratio:g}. "
              "Every suspected change was re-measured after a cooldown; only changes seen again count."),
              f"Exit code: {exit_code}", ""]
    confirmed = outcome.confirmed_regressions
    lines += [f"## Regressions (confirmed): {len(confirmed)}", ""]
    lines += _finding_table(confirmed) if confirmed else ["None.", ""]
    others = [f for f in outcome.findings if f not in confirmed]
    if others:
        lines += ["## Other suspected changes", ""] + _finding_table(others)
    if outcome.change_points:
        lines += ["## Change points in the nightly history", "",
                  "| device | model | variant | threads | from run | p50 before | p50 after | change | p |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for cp in outcome.change_points:
            lines.append(f"| {cp['device']} | {cp['model']} | {cp['variant']} | {cp['threads']} | {cp['run_id']} | "
                         f"{cp['before_ms']:.3f} ms | {cp['after_ms']:.3f} ms | {cp['direction']} x{cp['ratio']:.2f} | "
                         f"{cp['p_value']:.3g} |")
        lines.append("")
    if c.unpaired:
        lines += ["## Not compared", "", "| device | model | variant | threads | why |", "|---|---|---|---|---|"]
        lines += [f"| {u.device} | {u.model} | {u.variant} | {u.threads} | {u.kind.replace('_', ' ')}: {u.reason} |"
                  for u in c.unpaired]
        lines.append("")
    counts = c.to_dict()["counts"]
    lines += ["Compared: " + (", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(counts.items())) or "nothing"), ""]
    return "\n".join(lines)


def _finding_table(findings: list[Finding]) -> list[str]:
    lines = ["| device | model | variant | threads | what | first | re-measure | confirmed |", "|---|---|---|---|---|---|---|---|"]
    for f in findings:
        what = f"{f.verdict} ({', '.join(f.kinds)})" if f.kinds else f.verdict
        lines.append(f"| {f.device} | {f.model} | {f.variant} | {f.threads} | {what} | {'; '.join(f.reasons)} | "
                     f"{f.remeasure_note} | {'yes' if f.confirmed else 'no'} |")
    return lines + [""]


def dump(outcome: NightlyOutcome) -> str:
    """The outcome as JSON text (for ``--json``)."""
    return json.dumps(outcome.to_dict(), indent=2, default=str)
