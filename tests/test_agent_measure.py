"""The stopping rule and the statistics, driven by a fake clock (the one fake: time itself)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.measure import STOP_CAP, STOP_RUNS, percentile, statistics, timed_loop


class FakeClock:
    """A nanosecond clock that advances only when an invoke 'runs' (by the given durations)."""

    def __init__(self, durations_ns, overhead_ns=0):
        self.now = 1_000_000
        self.durations = list(durations_ns)
        self.overhead = overhead_ns
        self.invokes = 0

    def __call__(self):
        self.now += self.overhead
        return self.now

    def invoke(self):
        self.now += self.durations[self.invokes % len(self.durations)]
        self.invokes += 1


def test_runs_reached_before_min_seconds_keeps_going_until_min_seconds():
    clock = FakeClock([10_000_000])  # 10 ms per invoke
    loop = timed_loop(clock.invoke, runs=5, min_seconds=0.2, max_seconds=10, clock=clock)
    assert loop.stop_reason == STOP_RUNS
    assert len(loop.samples_ns) == 20  # 20 x 10 ms = the 0.2 s minimum
    assert list(loop.samples_ns) == [10_000_000] * 20


def test_min_seconds_reached_before_runs_keeps_going_until_runs():
    clock = FakeClock([100_000_000])  # 100 ms per invoke
    loop = timed_loop(clock.invoke, runs=30, min_seconds=0.5, max_seconds=100, clock=clock)
    assert loop.stop_reason == STOP_RUNS
    assert len(loop.samples_ns) == 30


def test_max_seconds_caps_both_minimums():
    clock = FakeClock([100_000_000])
    loop = timed_loop(clock.invoke, runs=1000, min_seconds=60, max_seconds=1.0, clock=clock)
    assert loop.stop_reason == STOP_CAP
    assert len(loop.samples_ns) == 10
    assert loop.elapsed_ns == 1_000_000_000


def test_only_the_invoke_sits_between_the_two_clock_reads():
    clock = FakeClock([5_000], overhead_ns=7)  # every clock read itself costs 7 ns
    loop = timed_loop(clock.invoke, runs=3, min_seconds=0, max_seconds=1, clock=clock)
    # each sample = the invoke + one clock read, nothing else
    assert list(loop.samples_ns) == [5_007, 5_007, 5_007]


def test_zero_runs_and_zero_seconds_is_an_empty_warmup():
    clock = FakeClock([1])
    loop = timed_loop(clock.invoke, runs=0, min_seconds=0, max_seconds=1, clock=clock)
    assert list(loop.samples_ns) == [] and clock.invokes == 0


def test_a_zero_cap_still_takes_one_sample():
    clock = FakeClock([1_000])
    loop = timed_loop(clock.invoke, runs=50, min_seconds=1, max_seconds=0, clock=clock)
    assert len(loop.samples_ns) == 1 and loop.stop_reason == STOP_CAP


def test_statistics_of_known_samples():
    samples = [1_000_000, 2_000_000, 3_000_000, 4_000_000, 10_000_000]
    stats = statistics(samples)
    assert stats["count"] == 5
    assert stats["mean_ms"] == pytest.approx(4.0)
    assert stats["std_ms"] == pytest.approx(np.std(np.array(samples) / 1e6, ddof=1))
    assert stats["min_ms"] == 1.0 and stats["max_ms"] == 10.0
    assert stats["p50_ms"] == pytest.approx(3.0)
    assert stats["p90_ms"] == pytest.approx(7.6)  # between 4 and 10, 60 % of the way
    assert stats["samples_us"] == [1000, 2000, 3000, 4000, 10000]
    assert stats["noisy"] is True  # std/mean = 3.5/4


def test_steady_samples_are_not_noisy_and_one_sample_has_zero_std():
    assert statistics([1_000_000, 1_010_000, 990_000])["noisy"] is False
    one = statistics([2_500])
    assert one["std_ms"] == 0.0 and one["p99_ms"] == one["p50_ms"] == pytest.approx(0.0025)


def test_noise_threshold_is_ten_percent_of_the_mean():
    # mean 100; std (ddof=1) of [100-d, 100+d] is d*sqrt(2): 10.01 -> flagged, 9.90 -> not
    assert statistics([92.92, 107.08])["noisy"] is True
    assert statistics([93, 107])["noisy"] is False


def test_statistics_refuse_no_samples():
    with pytest.raises(ValueError):
        statistics([])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=300),
       st.floats(min_value=0, max_value=100))
def test_percentile_matches_numpy_linear(values, q):
    ordered = sorted(values)
    assert percentile(ordered, q) == pytest.approx(np.percentile(values, q), rel=1e-9, abs=1e-6)
