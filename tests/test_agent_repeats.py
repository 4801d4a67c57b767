"""Process-level repeats, cooldown, run_delay, the throttle canary and the flags of a document."""

from __future__ import annotations

import statistics

import pytest

from agent import canary, measure, repeats, schema
from agent.runner import run_job
from tests.test_agent_run import quick


def test_repeat_runs_fresh_workers_and_the_headline_p50_is_the_median_of_theirs(test_models):
    sleeps = []
    doc = run_job(quick(test_models["bench_tiny"], repeat=3, cooldown=0.25), sleep=sleeps.append)
    assert doc["status"] == "ok", doc["error"]
    processes = doc["processes"]
    assert [p["index"] for p in processes] == [0, 1, 2]
    assert len({p["pid"] for p in processes}) == 3  # three processes, not three loops
    assert sleeps == [0.25, 0.25]  # between the workers, not before the first
    p50s = [p["p50_ms"] for p in processes]
    timing = doc["timing"]
    assert timing["p50_ms"] == statistics.median(p50s)
    assert timing["between_process_cv"] == pytest.approx(statistics.stdev(p50s) / statistics.mean(p50s))
    assert timing["process_count"] == 3
    assert timing["count"] == sum(p["count"] for p in processes) == len(timing["samples_us"])
    assert timing["min_ms"] == min(p["min_ms"] for p in processes)
    assert timing["mean_ms"] == pytest.approx(sum(p["mean_ms"] * p["count"] for p in processes) / timing["count"])
    assert doc["memory"]["peak_rss_kb"] == max(p["peak_rss_kb"] for p in processes)
    assert ("noisy" in doc["flags"]) == (timing["between_process_cv"] >= 0.10 or any(
        "noisy" in p["flags"] for p in processes))


def summary_doc(p50: float, status: str = "ok", flags: tuple = (), std: float = 0.001) -> dict:
    doc = schema.new_document({"id": "j"}, "m.tflite", {"temp_c_after": None})
    doc["status"], doc["flags"] = status, list(flags)
    if status == "ok":
        doc["timing"].update(count=4, mean_ms=p50, std_ms=std, min_ms=p50 - 0.01, max_ms=p50 + 0.01, p50_ms=p50,
                             init_ms=1.0, first_inference_ms=2.0, samples_us=[round(p50 * 1000)] * 4,
                             stop_reason=measure.STOP_RUNS, noisy=False)
        doc["memory"].update(peak_rss_kb=1000, model_peak_kb=100)
    else:
        doc["error"] = {"kind": "signal", "message": "killed", "stderr_tail": ""}
    return doc


def test_processes_that_disagree_by_more_than_ten_percent_flag_the_job_noisy():
    steady = repeats.combine([summary_doc(1.00), summary_doc(1.02), summary_doc(0.99)])
    assert steady["flags"] == [] and steady["timing"]["p50_ms"] == 1.00
    spread = repeats.combine([summary_doc(1.0), summary_doc(1.5), summary_doc(1.0)])
    assert spread["flags"] == ["noisy"] and spread["timing"]["between_process_cv"] > 0.10
    assert any("noisy between processes" in w for w in spread["warnings"])


def test_a_failed_process_fails_the_job_but_the_good_ones_stay_visible():
    doc = repeats.combine([summary_doc(1.0), summary_doc(0, status="crashed"), summary_doc(1.05, flags=("throttled",))])
    assert doc["status"] == "crashed" and doc["error"]["kind"] == "signal"
    assert [p["status"] for p in doc["processes"]] == ["ok", "crashed", "ok"]
    assert doc["timing"]["p50_ms"] == pytest.approx(1.025) and doc["flags"] == ["throttled"]


def test_run_delay_pauses_between_invocations_outside_the_samples(test_models):
    doc = run_job(quick(test_models["bench_tiny"], runs=6, min_seconds=0, run_delay=0.05))
    assert doc["status"] == "ok", doc["error"]
    timing = doc["timing"]
    assert timing["count"] == 6
    assert timing["p50_ms"] < 25  # a ~50 us model: with the 50 ms pauses inside, every sample would be >= 50
    assert timing["warmup_count"] >= 1 and doc["job"]["run_delay"] == 0.05


def test_the_paced_loop_sleeps_between_runs_and_not_after_the_last():
    now = [0]
    sleeps = []

    def clock() -> int:
        now[0] += 1_000
        return now[0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += int(seconds * 1e9)

    loop = measure.paced_loop(lambda: None, 3, 0.0, 10.0, 0.5, clock=clock, sleep=sleep)
    assert len(loop.samples_ns) == 3 and sleeps == [0.5, 0.5]
    assert list(loop.samples_ns) == [1_000] * 3  # only the invoke between the clock reads
    assert loop.elapsed_ns >= 1e9  # the stopping rule counts wall time


@pytest.mark.parametrize("before,after,throttled", [(1000.0, 1100.0, False), (1000.0, 1101.0, True),
                                                    (1000.0, 800.0, False), (None, 900.0, None)])
def test_the_canary_flags_more_than_ten_percent_slower_after(before, after, throttled):
    verdict = canary.verdict(before, after)
    assert verdict["throttled"] is throttled
    if before:
        assert verdict["ratio"] == pytest.approx(after / before)


def test_the_canary_times_its_fixed_work_with_the_clock_given():
    ticks = iter([0, 5_000, 10_000, 12_000, 20_000, 29_000])
    assert canary.measure(clock=lambda: next(ticks), rounds=3, work=10) == 2.0  # best of 5, 2, 9 us
    real = canary.measure()
    assert 10 < real < 1_000_000


def test_a_canary_that_slowed_flags_the_job_throttled_with_the_reason():
    from agent.worker import _flag

    doc = schema.new_document({}, "m", {})
    doc["canary"] = canary.verdict(1000.0, 1300.0)
    doc["state"] = {"before": {"throttle_bits": None}, "after": {"throttle_bits": None}}
    stats = {"noisy": False, "std_ms": 0.0, "mean_ms": 1.0}
    _flag(quick("m"), doc, stats, measure.Loop(measure.array("q", [1]), 1, measure.STOP_CAP))
    assert doc["flags"] == ["throttled", "partial"]
    assert any("canary ran 1.30x slower" in w for w in doc["warnings"])
    assert any("stopped at max_seconds" in w for w in doc["warnings"])


def test_the_max_seconds_cap_flags_the_document_partial(test_models):
    doc = run_job(quick(test_models["bench_medium"], runs=100000, min_seconds=0, max_seconds=0.05))
    assert doc["status"] == "ok" and doc["timing"]["stop_reason"] == "max_seconds"
    assert "partial" in doc["flags"] and doc["processes"][0]["flags"] == doc["flags"]
    clean = run_job(quick(test_models["bench_tiny"]))
    assert "partial" not in clean["flags"]
