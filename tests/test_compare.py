"""``edgebench compare``: significant AND big enough, on run folders whose samples come from a seeded
generator (tests/history_runs.py), plus the U test itself against known values."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from controller.cli import main
from controller.history.compare import Limits, compare_frames
from controller.history.mannwhitney import mann_whitney_u
from tests.history_runs import Job, frames, make_run

JOBS = [Job("mobilenet", "fp32", median_ms=12.0), Job("mobilenet", "int8", median_ms=4.0),
        Job("mobilenet", "int8", threads=2, median_ms=2.5), Job("resnet", "fp16", device="board-1", median_ms=30.0)]


def compare_json(*argv: str) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["compare", *argv, "--json"])
    return code, json.loads(out.getvalue())


def shifted(jobs: list[Job], factor: float, which: int | None = None) -> list[Job]:
    return [Job(**{**j.__dict__, "median_ms": j.median_ms * (factor if which in (None, i) else 1.0)})
            for i, j in enumerate(jobs)]


# --- the U test -----------------------------------------------------------------------------------------

def test_u_test_known_value_fully_separated_samples():
    # U1 = 0; normal approximation with continuity: z = (25 - 12.5 - 0.5) / sqrt(25 * 11 / 12) = 2.5067
    test = mann_whitney_u(np.arange(1, 6), np.arange(6, 11))
    assert test.u == 0.0
    assert test.p == pytest.approx(0.012186, abs=1e-6)


def test_u_test_matches_scipy_with_ties():
    from scipy.stats import mannwhitneyu  # dev dependency (via scikit-learn); the controller does not need it

    rng = np.random.default_rng(7)
    for n1, n2 in ((5, 5), (20, 31), (200, 150)):
        a, b = rng.integers(0, 15, n1), rng.integers(1, 16, n2)  # many ties
        ours = mann_whitney_u(a, b)
        ref = mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
        assert ours.u == ref.statistic
        assert ours.p == pytest.approx(ref.pvalue, rel=1e-9)


def test_u_test_needs_five_samples_a_side_and_refuses_nan():
    assert mann_whitney_u([1, 2, 3, 4], [1, 2, 3, 4, 5]) is None
    assert mann_whitney_u([3.0] * 8, [3.0] * 9).p == 1.0
    with pytest.raises(ValueError, match="NaN"):
        mann_whitney_u([1, 2, 3, 4, float("nan")], [1, 2, 3, 4, 5])


# --- the command on run folders --------------------------------------------------------------------------

def test_a_20_percent_shift_is_a_latency_regression_exit_5(tmp_path):
    base = make_run(tmp_path, JOBS, seed=1, run_id="base")
    new = make_run(tmp_path, shifted(JOBS, 1.20, which=1), seed=2, run_id="new")
    code, doc = compare_json(base, new)
    assert code == 5
    regressed = [p for p in doc["pairs"] if p["verdict"] == "regressed"]
    assert [(p["model"], p["variant"], p["threads"]) for p in regressed] == [("mobilenet", "int8", 1)]
    assert regressed[0]["kinds"] == ["latency"]
    assert 1.12 < regressed[0]["ratio"] < 1.30 and regressed[0]["p_value"] < 1e-6
    assert doc["counts"] == {"regressed": 1, "unchanged": 3}


def test_pure_noise_is_not_flagged_exit_0(tmp_path):
    base = make_run(tmp_path, JOBS, seed=11, run_id="base")
    new = make_run(tmp_path, JOBS, seed=12, run_id="new")
    code, doc = compare_json(base, new)
    assert code == 0
    assert {p["verdict"] for p in doc["pairs"]} == {"unchanged"}
    assert all(p["base_samples"] == 50 and p["new_samples"] == 50 for p in doc["pairs"])


def test_a_20_percent_speedup_is_an_improvement_exit_0_and_the_table_names_it(tmp_path, capsys):
    base = make_run(tmp_path, JOBS, seed=3, run_id="base")
    new = make_run(tmp_path, shifted(JOBS, 0.80, which=0), seed=4, run_id="new")
    assert main(["compare", "base", "new", "--out", str(tmp_path)]) == 0  # run ids under --out
    text = capsys.readouterr().out
    assert "improved" in text and "1 improved, 3 unchanged" in text
    code, doc = compare_json(base, new)
    assert code == 0
    assert [p["verdict"] for p in doc["pairs"] if p["model"] == "mobilenet" and p["variant"] == "fp32"] == ["improved"]


def test_false_alert_rate_over_seeded_noise_pairs_and_power_on_a_20_percent_shift(capsys):
    """Bound: under pure noise the U test alone alerts at most alpha (1 %) of the time when the two runs
    share one level; the generator adds a run-to-run level change (sigma 2 % per run, the main source of
    false alerts in practice: thermal state, background load), which makes the U test alone fire often,
    and the p50 ratio gate (>= 1.10, a 3.4-sigma level difference) brings the rate back near 0.04 %. We
    assert <= alpha = 1 %, the rate the tools of the issue (asv, conbench, Perfherder: 4-12 %) exceed."""
    limits = Limits()
    pairs, alerts, test_only = 0, 0, 0
    for seed in range(300):
        base, base_s = frames(JOBS, seed=2 * seed, run_id=f"b{seed}")
        new, new_s = frames(JOBS, seed=2 * seed + 1, run_id=f"n{seed}")
        result = compare_frames(base, base_s, new, new_s, limits)
        pairs += len(result.pairs)
        alerts += len(result.regressions) + len(result.improvements)
        test_only += sum(p.p_value is not None and p.p_value < limits.alpha for p in result.pairs)
    rate = alerts / pairs
    found = 0
    for seed in range(100):
        base, base_s = frames(JOBS[:1], seed=10_000 + 2 * seed, run_id=f"b{seed}")
        new, new_s = frames(shifted(JOBS[:1], 1.20), seed=10_001 + 2 * seed, run_id=f"n{seed}")
        found += len(compare_frames(base, base_s, new, new_s, limits).regressions)
    with capsys.disabled():
        print(f"\ncompare false-alert rate over {pairs} seeded noise pairs: {rate:.2%} "
              f"(U test alone: {test_only / pairs:.1%}); 20 % shift found in {found}/100")
    assert pairs == 1200
    # The data are seeded (numpy pinned): the counts are exact, so any change to the test or the gate shows.
    assert alerts == 1  # 0.08 %, under alpha = 1 %
    assert test_only == 416  # 34.7 %: the run-to-run level change is real noise, the ratio gate matters
    assert found == 100


def test_unpaired_jobs_are_listed_with_the_reason(tmp_path):
    base_jobs = JOBS + [Job("gone", "fp32")]
    new_jobs = [Job("mobilenet", "fp32", median_ms=12.0, sha256="f" * 64),  # model changed
                Job("mobilenet", "int8", median_ms=4.0, runtime_version="2.4.0"),  # runtime upgraded
                Job("mobilenet", "int8", threads=2, median_ms=2.5, fingerprint="fp-other"),  # device changed
                JOBS[3], Job("fresh", "fp32")]
    code, doc = compare_json(make_run(tmp_path, base_jobs, 1, run_id="b"), make_run(tmp_path, new_jobs, 2, run_id="n"))
    assert code == 0
    why = {(u["model"], u["variant"], u["threads"]): (u["kind"], u["reason"]) for u in doc["unpaired"]}
    assert why[("gone", "fp32", 1)] == ("missing", "not in NEW")
    assert why[("fresh", "fp32", 1)] == ("new", "only in NEW")
    assert why[("mobilenet", "fp32", 1)][0] == "not_comparable" and "model changed" in why[("mobilenet", "fp32", 1)][1]
    assert why[("mobilenet", "int8", 1)][1] == "runtime version changed (2.3.0 -> 2.4.0)"
    assert "device fingerprint changed" in why[("mobilenet", "int8", 2)][1]
    assert [p["model"] for p in doc["pairs"]] == ["resnet"]


def test_accuracy_drift_memory_and_crash_are_regressions_of_their_own_kinds(tmp_path):
    ok = {"top1": 0.90, "cosine_vs_fp32": 0.999}
    base_jobs = [Job("a", "int8", accuracy=ok), Job("b", "int8", accuracy=ok), Job("c", "int8"), Job("d", "int8"),
                 Job("e", "int8", accuracy=ok)]
    new_jobs = [Job("a", "int8", accuracy={"top1": 0.85, "cosine_vs_fp32": 0.999}),  # 5 points lost
                Job("b", "int8", accuracy={"top1": 0.90, "cosine_vs_fp32": 0.95}),  # drift
                Job("c", "int8", peak_rss_kb=60_000),  # +20 MB
                Job("d", "int8", status="crashed"),
                Job("e", "int8", accuracy={"top1": 0.89, "cosine_vs_fp32": 0.995})]  # within thresholds
    code, doc = compare_json(make_run(tmp_path, base_jobs, 1, run_id="b"), make_run(tmp_path, new_jobs, 2, run_id="n"))
    assert code == 5
    kinds = {p["model"]: p["kinds"] for p in doc["pairs"]}
    assert kinds == {"a": ["accuracy"], "b": ["drift"], "c": ["memory"], "d": ["failed"], "e": []}
    reasons = {p["model"]: p["reasons"] for p in doc["pairs"]}
    assert reasons["a"] == ["top-1 90.0% -> 85.0% (5.0 points > 2)"]
    assert "signal 11" in reasons["d"][0]
    # thresholds are options: a 6-point allowance forgives model a
    code, doc = compare_json(str(tmp_path / "b"), str(tmp_path / "n"), "--top1-drop", "6")
    assert {p["model"]: p["kinds"] for p in doc["pairs"]}["a"] == []


def test_usage_errors_exit_2(tmp_path, capsys):
    run = make_run(tmp_path, JOBS[:1], 1, run_id="r")
    assert main(["compare", run, run, "--threshold", "0.9"]) == 2
    assert "--threshold must be > 1" in capsys.readouterr().err
    assert main(["compare", run, str(tmp_path / "nowhere")]) == 2
    assert "nowhere: not a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["compare", run])
    assert exc.value.code == 2
