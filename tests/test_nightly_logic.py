"""The nightly's judgement on seeded run folders (tests/history_runs.py): confirm by re-measure, which
nights may serve as a baseline, change points over the history, regressions.json / .md.

The fleet run itself is exercised end to end in tests/test_nightly.py; here the re-measure step returns
another seeded run folder, so each rule is checked on exactly known data.
"""

from __future__ import annotations

import datetime
import json

import pytest

from controller.errors import InputError
from controller.history import nightly
from controller.history.compare import Limits
from controller.history.index import index_run, open_index
from controller.history.nightly_runs import accepted_keys, nightly_history, nightly_runs
from tests.history_runs import Job, make_run

DAY = datetime.timedelta(days=1)
START = datetime.datetime(2026, 11, 1, 2, 30, tzinfo=datetime.timezone.utc)
A, B, C = Job("alpha", "int8", median_ms=4.0), Job("beta", "fp32", median_ms=10.0), Job("gamma", "fp16", median_ms=6.0)


def slower(job: Job, factor: float) -> Job:
    return Job(**{**job.__dict__, "median_ms": job.median_ms * factor})


class Remeasure:
    """Stands in for the fleet's re-run: writes a seeded run folder of the given jobs."""

    def __init__(self, folder, jobs: list[Job]):
        self.folder, self.jobs, self.asked = folder, jobs, []

    def __call__(self, keys):
        self.asked.append(sorted(keys))
        return make_run(self.folder, self.jobs, seed=999, run_id=f"remeasure-{len(self.asked)}")


def night(out, day: int, jobs: list[Job], remeasure=None, sleeps=None) -> nightly.NightlyOutcome:
    """Write nightly number ``day`` and judge it like `edgebench nightly` does."""
    run = make_run(out, jobs, seed=day, run_id=f"n{day:02d}", created=START + day * DAY, kind="nightly")
    runs = nightly_runs(str(out))
    earlier = [r for r in runs if r.path != run]
    outcome = nightly.evaluate(run, earlier, Limits(), remeasure, 30.0, nightly_history(runs),
                               sleep=(sleeps.append if sleeps is not None else lambda s: None))
    nightly.write_outcome(outcome, 5 if outcome.confirmed_regressions else 0)
    return outcome


def test_only_a_change_seen_again_after_the_cooldown_is_a_regression(tmp_path):
    out = tmp_path / "reports"
    for day in range(3):
        night(out, day, [A, B, C])
    again = Remeasure(tmp_path / "re", [slower(A, 1.3), B])  # alpha is slow again; beta was a fluke
    sleeps = []
    outcome = night(out, 3, [slower(A, 1.3), slower(B, 1.3), C], again, sleeps)
    assert sleeps == [30.0]
    assert again.asked == [[("board-0", "alpha", "int8", 1), ("board-0", "beta", "fp32", 1)]]
    assert [(f.model, f.confirmed) for f in outcome.findings] == [("alpha", True), ("beta", False)]
    assert [f.model for f in outcome.confirmed_regressions] == ["alpha"]
    assert outcome.findings[0].remeasure_ratio > 1.2 and outcome.findings[1].remeasure_ratio < 1.1
    assert outcome.baseline_runs == ["n02"]
    doc = json.loads((out / "n03" / "regressions.json").read_text())
    assert [r["model"] for r in doc["regressions"]] == ["alpha"]
    assert [r["model"] for r in doc["not_confirmed"]] == ["beta"]
    assert {k["model"]: k["baseline_ok"] for k in doc["keys"]} == {"alpha": True, "beta": False, "gamma": True}
    md = (out / "n03" / "regressions.md").read_text()
    assert "## Regressions (confirmed): 1" in md and "| board-0 | alpha | int8 | 1 | regressed (latency) |" in md


def test_a_fluke_and_a_lone_improvement_never_become_the_baseline(tmp_path):
    out = tmp_path / "reports"
    night(out, 0, [A, B, C])
    # night 1: beta looks 30 % slower, gamma 30 % faster; the re-measure shows neither again
    outcome = night(out, 1, [A, slower(B, 1.3), slower(C, 0.7)], Remeasure(tmp_path / "re", [A, B, C]))
    assert [(f.model, f.verdict, f.confirmed) for f in outcome.findings] == [("beta", "regressed", False),
                                                                             ("gamma", "improved", False)]
    # night 2 is normal: beta and gamma are judged against night 0, alpha against night 1
    outcome = night(out, 2, [A, B, C], Remeasure(tmp_path / "re2", [A, B, C]))
    base = {p.model: p.base_run for p in outcome.comparison.pairs}
    assert base == {"alpha": "n01", "beta": "n00", "gamma": "n00"}
    assert {p.verdict for p in outcome.comparison.pairs} == {"unchanged"}
    assert outcome.baseline_runs == ["n01", "n00"]
    # a confirmed improvement does move the baseline
    night(out, 3, [A, B, slower(C, 0.7)], Remeasure(tmp_path / "re3", [A, B, slower(C, 0.7)]))
    outcome = night(out, 4, [A, B, slower(C, 0.7)])
    assert {p.model: p.base_run for p in outcome.comparison.pairs}["gamma"] == "n03"
    assert {p.verdict for p in outcome.comparison.pairs} == {"unchanged"}


def test_change_points_over_the_nightly_history(tmp_path):
    out = tmp_path / "reports"
    for day in range(14):  # alpha's level rises 25 % from night 8 on; beta stays
        night(out, day, [slower(A, 1.25) if day >= 8 else A, B])
    outcome = night(out, 14, [slower(A, 1.25), B])
    points = outcome.change_points
    assert [(p["model"], p["run_id"], p["direction"]) for p in points] == [("alpha", "n08", "slower")]
    assert 1.15 < points[0]["ratio"] < 1.35 and points[0]["nights"] == 15
    md = (out / "n14" / "regressions.md").read_text()
    assert "## Change points in the nightly history" in md and "| n08 |" in md


def test_jobs_that_vanished_or_changed_are_listed_with_the_reason(tmp_path):
    out = tmp_path / "reports"
    night(out, 0, [A, B, C])
    changed = Job("beta", "fp32", median_ms=10.0, runtime_version="2.4.0")
    outcome = night(out, 1, [A, changed, Job("delta", "int8")])
    kinds = {u.model: (u.kind, u.reason) for u in outcome.comparison.unpaired}
    assert kinds == {"beta": ("not_comparable", "runtime version changed (2.3.0 -> 2.4.0)"),
                     "gamma": ("missing", "not in NEW"), "delta": ("new", "only in NEW")}


def test_a_run_that_cannot_be_indexed_says_how_to_add_it_later(tmp_path):
    out = tmp_path / "reports"
    run = make_run(out, [A, B], seed=1, run_id="n01", created=START, kind="nightly")
    assert index_run(run, out, kind="nightly") == {"rows": 2, "error": None}
    assert [r.run_id for r in nightly_runs(str(out), open_index(out))] == ["n01"]
    failed = index_run(run, out, "mysql://db/edgebench")  # not a store edgebench can write
    assert failed["rows"] == 0 and "--store mysql://" in failed["error"]
    assert f"edgebench history --rebuild --out {out}" in failed["error"]


def test_a_damaged_regressions_file_is_named_not_a_traceback(tmp_path):
    run = make_run(tmp_path, [A], seed=1, run_id="n01", created=START, kind="nightly")
    (tmp_path / "n01" / "regressions.json").write_text('{"keys": [{"device": "board-0"}]}')
    with pytest.raises(InputError, match=r"n01/regressions.json: not a readable regressions document"):
        accepted_keys(run)
    (tmp_path / "n01" / "regressions.json").unlink()
    assert accepted_keys(run) == {}


def test_two_nightlies_started_within_one_second_keep_their_order(tmp_path):
    """run.json's ``created`` (now_iso) is precise enough that the later of two quick nightlies is the
    later one everywhere; to the second they tied, and the random run id suffix decided (a CI failure:
    night 5 was judged against night 3)."""
    import time

    from controller.fleet.store import now_iso

    out = tmp_path / "reports"
    for run_id in ("n-b", "n-a"):  # started in this order; the ids sort the other way
        created = datetime.datetime.fromisoformat(now_iso())
        run = make_run(out, [A], seed=1, run_id=run_id, created=created, kind="nightly")
        assert index_run(run, out, kind="nightly")["error"] is None
        time.sleep(0.005)
    assert [r.run_id for r in nightly_runs(str(out))] == ["n-b", "n-a"]
    assert [r.run_id for r in nightly_runs(str(out), open_index(out))] == ["n-b", "n-a"]
