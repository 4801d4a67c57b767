"""The Mann-Whitney U test (two-sided), as ``compare`` uses it on raw latency samples.

Normal approximation with tie correction and continuity correction - the ``method="asymptotic"``,
``use_continuity=True`` variant of ``scipy.stats.mannwhitneyu`` (which the tests check it against), written
here so the controller does not depend on SciPy. Runs have tens to thousands of samples per job, where the
approximation is accurate; with fewer than :data:`MIN_SAMPLES` on a side no p-value is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_SAMPLES = 5  #: below this many samples on a side the test is not run (too few for any verdict)


@dataclass(frozen=True)
class UTest:
    """Result of :func:`mann_whitney_u`: the U statistic of the first sample and the two-sided p-value."""

    u: float
    p: float
    n1: int
    n2: int


def mann_whitney_u(x: np.ndarray, y: np.ndarray) -> UTest | None:
    """Two-sided Mann-Whitney U test of ``x`` against ``y`` (1-D numeric arrays).

    Returns None when either side has fewer than :data:`MIN_SAMPLES` values. When every value is equal
    (no variance of ranks) p is 1.0. NaNs are not allowed (raise ValueError).
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("mann_whitney_u: samples contain NaN")
    n1, n2 = len(a), len(b)
    if n1 < MIN_SAMPLES or n2 < MIN_SAMPLES:
        return None
    both = np.concatenate([a, b])
    ranks, tie_counts = _ranks(both)
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    mean = n1 * n2 / 2.0
    tie_term = float((tie_counts ** 3 - tie_counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1)))
    if var <= 0:
        return UTest(u=u1, p=1.0, n1=n1, n2=n2)
    u = max(u1, n1 * n2 - u1)  # two-sided: the larger of U1, U2
    z = (u - mean - 0.5) / math.sqrt(var)
    p = min(1.0, 2.0 * 0.5 * math.erfc(z / math.sqrt(2.0)))
    return UTest(u=u1, p=max(p, 0.0), n1=n1, n2=n2)


def _ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based, ties share their mean rank) and the size of each group of ties."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    counts = np.diff(np.concatenate([starts, [len(values)]]))
    mean_rank = starts + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks, counts.astype(np.float64)
