"""E-divisive change points on seeded series with exact expected breakpoints."""

from __future__ import annotations

import numpy as np
import pytest

from controller.history.changepoints import e_divisive


def steps(seed: int, *segments: tuple[int, float], sigma: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(mean, sigma, length) for length, mean in segments])


def test_one_step_is_found_at_its_exact_index_with_the_segment_medians():
    points = e_divisive(steps(1, (30, 10.0), (30, 12.0), sigma=0.2))
    assert [c.index for c in points] == [30]
    assert points[0].before == pytest.approx(10.0, abs=0.1)
    assert points[0].after == pytest.approx(12.0, abs=0.1)
    assert points[0].ratio == pytest.approx(1.2, abs=0.02)
    assert points[0].p_value == 0.005  # no permutation of 199 reached the observed statistic


def test_two_steps_up_then_down_are_both_found():
    assert [c.index for c in e_divisive(steps(2, (25, 10.0), (20, 13.0), (25, 9.0)))] == [25, 45]


def test_a_five_sigma_step_is_found_exactly_over_ten_seeds():
    found = [[c.index for c in e_divisive(steps(seed, (25, 10.0), (25, 11.5)), seed=seed)] for seed in range(10)]
    assert all(25 in indices for indices in found)
    # Seeds 0 and 8 draw a genuine chance shift inside one noise segment (Welch t-test p < 0.001 there),
    # which binary segmentation then reports too; no other seed has an extra point.
    assert [len(indices) for indices in found] == [2, 1, 1, 1, 1, 1, 1, 1, 2, 1]


def test_a_three_sigma_step_is_found_within_one_point():
    for seed in range(1, 8):
        indices = [c.index for c in e_divisive(steps(seed, (25, 10.0), (25, 10.9)), seed=seed)]
        assert len(indices) == 1 and abs(indices[0] - 25) <= 1, (seed, indices)


def test_pure_noise_rarely_has_a_change_point_and_the_answer_is_reproducible():
    flagged = [s for s in range(60) if e_divisive(steps(100 + s, (60, 10.0)), seed=s)]
    assert flagged == [25]  # seeded, so exact: 1 of 60 (alpha 0.01 per series: 0.6 expected)
    series = steps(5, (20, 10.0), (20, 11.0))
    assert e_divisive(series, seed=3) == e_divisive(series, seed=3)


def test_short_series_and_bad_input():
    assert e_divisive([1.0, 2.0, 3.0, 50.0, 51.0]) == []  # fewer than 2 x min_size points
    assert e_divisive([]) == []
    with pytest.raises(ValueError, match="NaN"):
        e_divisive([1.0, float("nan")] * 5)
    with pytest.raises(ValueError, match="min_size"):
        e_divisive([1.0] * 10, min_size=1)
