"""Change points in a series of measurements (one p50 per nightly): E-divisive, as in Apache Otava
(hunter) and Matteson & James (2014), with a permutation test for significance.

For a segment x[0:n] and a split τ, the energy statistic compares the two sides:

    E(τ) = 2/(m·k) Σ|l_i - r_j|  -  1/C(m,2) Σ|l_i - l_j|  -  1/C(k,2) Σ|r_i - r_j|      (m = τ, k = n - τ)
    Q(τ) = m·k/n · E(τ)

The best split maximises Q. It is significant when a random reordering of the segment rarely gives a
maximum as large: p = (1 + #{permutations with max Q ≥ observed}) / (1 + permutations). A significant
split is kept and both halves are searched again (binary segmentation), down to ``min_size`` points per
segment. The permutations come from a seeded generator, so a series always gives the same answer.

Cost: O(n²) per permutation (one distance matrix, prefix sums); the nightly caps a series at its latest
``window`` points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChangePoint:
    """The series changed between ``index - 1`` and ``index`` (``index`` starts the new segment)."""

    index: int
    p_value: float
    before: float  #: median of the segment before (up to the previous change point)
    after: float  #: median of the segment after (up to the next change point)

    @property
    def ratio(self) -> float:
        return self.after / self.before if self.before else float("inf")


def e_divisive(series, *, alpha: float = 0.01, permutations: int = 199, min_size: int = 3,
               seed: int = 0) -> list[ChangePoint]:
    """Change points of ``series`` (1-D, finite numbers), in index order.

    ``alpha``: a split is kept when its permutation p-value is below it (with 199 permutations the
    smallest possible p is 0.005). ``min_size``: the fewest points a segment may have (>= 2). Raises
    ValueError for NaN/inf values or a ``min_size`` below 2.
    """
    x = np.asarray(series, dtype=np.float64).ravel()
    if not np.isfinite(x).all():
        raise ValueError("e_divisive: the series holds NaN or inf")
    if min_size < 2:
        raise ValueError("e_divisive: min_size must be >= 2")
    rng = np.random.default_rng(seed)
    found: list[tuple[int, float]] = []
    pending = [(0, len(x))]
    while pending:
        start, end = pending.pop()
        if end - start < 2 * min_size:
            continue
        segment = x[start:end]
        tau, q = _best_split(_distances(segment), min_size)
        if tau is None:
            continue
        p = _permutation_p(segment, q, min_size, permutations, rng)
        if p < alpha:
            found.append((start + tau, p))
            pending += [(start, start + tau), (start + tau, end)]
    found.sort()
    bounds = [0] + [i for i, _ in found] + [len(x)]
    return [ChangePoint(index=i, p_value=p, before=float(np.median(x[bounds[k]:i])),
                        after=float(np.median(x[i:bounds[k + 2]])))
            for k, (i, p) in enumerate(found)]


def _distances(segment: np.ndarray) -> np.ndarray:
    return np.abs(segment[:, None] - segment[None, :])


def _best_split(d: np.ndarray, min_size: int) -> tuple[int | None, float]:
    """(τ, Q(τ)) maximising the energy statistic over min_size <= τ <= n - min_size."""
    n = len(d)
    prefix = np.zeros((n + 1, n + 1))
    prefix[1:, 1:] = d.cumsum(0).cumsum(1)
    taus = np.arange(min_size, n - min_size + 1)
    if not len(taus):
        return None, 0.0
    m = taus.astype(np.float64)
    k = n - m
    within_left = prefix[taus, taus]  # Σ over ordered pairs of the left side (twice the pair sum)
    rows_left = prefix[taus, n]  # Σ over left rows, all columns
    between = rows_left - within_left
    within_right = prefix[n, n] - within_left - 2.0 * between
    energy = 2.0 * between / (m * k) - within_left / (m * (m - 1)) - within_right / (k * (k - 1))
    q = m * k / n * energy
    best = int(np.argmax(q))
    return int(taus[best]), float(q[best])


def _permutation_p(segment: np.ndarray, observed: float, min_size: int, permutations: int,
                   rng: np.random.Generator) -> float:
    exceed = 0
    for _ in range(permutations):
        _, q = _best_split(_distances(rng.permutation(segment)), min_size)
        exceed += q >= observed
    return (1 + exceed) / (1 + permutations)
