"""The timing loop and the statistics derived from its raw samples (DESIGN.md "Measurement rules").

Stopping rule: keep invoking until at least ``runs`` samples AND ``min_seconds`` have passed, but stop
at ``max_seconds`` whatever the count. Warmup follows the same rule with its own minimums (and the
same cap). Between the two clock reads of a sample there is nothing but ``invoke()``. The clock is
injected (``time.perf_counter_ns`` in production) so tests can drive the rule with a fake one.
Standard library only.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

NOISE_THRESHOLD = 0.10  #: std/mean at or above this flags the measurement as noisy
STOP_RUNS = "runs_and_min_seconds"
STOP_CAP = "max_seconds"


@dataclass
class Loop:
    """Raw result of one timed loop."""

    samples_ns: array  #: one int per invoke, nanoseconds (array('q'): 8 bytes a sample, no int objects)
    elapsed_ns: int  #: from the loop's start to its last clock read
    stop_reason: str  #: STOP_RUNS or STOP_CAP


def timed_loop(invoke: Callable[[], object], runs: int, min_seconds: float, max_seconds: float,
               clock: Callable[[], int] = time.perf_counter_ns) -> Loop:
    """Invoke until ``runs`` samples AND ``min_seconds``, capped by ``max_seconds``; time each invoke.

    ``runs == 0`` and ``min_seconds == 0`` give an empty loop (used for "no warmup"). At least one
    invoke runs otherwise, even with ``max_seconds == 0``. Exceptions of ``invoke`` propagate.
    """
    samples = array("q")
    if runs <= 0 and min_seconds <= 0:
        return Loop(samples, 0, STOP_RUNS)
    append = samples.append
    start = clock()
    min_end = start + int(min_seconds * 1e9)
    max_end = start + int(max_seconds * 1e9)
    count = 0
    while True:
        t0 = clock()
        invoke()
        t1 = clock()
        append(t1 - t0)
        count += 1
        if count >= runs and t1 >= min_end:
            return Loop(samples, t1 - start, STOP_RUNS)
        if t1 >= max_end:
            return Loop(samples, t1 - start, STOP_CAP)


def paced_loop(invoke: Callable[[], object], runs: int, min_seconds: float, max_seconds: float, delay_s: float,
               clock: Callable[[], int] = time.perf_counter_ns,
               sleep: Callable[[float], None] = time.sleep) -> Loop:
    """:func:`timed_loop` with a pause of ``delay_s`` between two invocations (benchmark_model's
    ``run_delay``: a model run now and then, not back to back). The pause is outside the two clock reads
    of a sample; the stopping rule counts wall time, pauses included. Used only when ``delay_s > 0``, so
    the default loop has nothing but ``invoke()`` between its clock reads and no pause either."""
    samples = array("q")
    if runs <= 0 and min_seconds <= 0:
        return Loop(samples, 0, STOP_RUNS)
    start = clock()
    min_end = start + int(min_seconds * 1e9)
    max_end = start + int(max_seconds * 1e9)
    while True:
        t0 = clock()
        invoke()
        t1 = clock()
        samples.append(t1 - t0)
        if len(samples) >= runs and t1 >= min_end:
            return Loop(samples, t1 - start, STOP_RUNS)
        if t1 >= max_end:
            return Loop(samples, t1 - start, STOP_CAP)
        sleep(delay_s)


def percentile(sorted_values: list, q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, interpolating linearly between the two
    nearest ranks (numpy's default "linear" method). Raises ValueError on an empty list."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def statistics(samples_ns: Sequence[int]) -> dict:
    """count, mean/std/min/max/p50/p90/p99 in ms (std with n-1; 0 for one sample), ``noisy`` and
    ``samples_us`` (every sample, rounded to whole microseconds). Raises ValueError on no samples."""
    if not samples_ns:
        raise ValueError("statistics of no samples")
    count = len(samples_ns)
    ordered = sorted(samples_ns)
    mean = math.fsum(samples_ns) / count
    variance = math.fsum((s - mean) ** 2 for s in samples_ns) / (count - 1) if count > 1 else 0.0
    std = math.sqrt(variance)
    ms = 1e-6
    return {
        "count": count,
        "mean_ms": mean * ms,
        "std_ms": std * ms,
        "min_ms": ordered[0] * ms,
        "max_ms": ordered[-1] * ms,
        "p50_ms": percentile(ordered, 50) * ms,
        "p90_ms": percentile(ordered, 90) * ms,
        "p99_ms": percentile(ordered, 99) * ms,
        "noisy": bool(mean > 0 and std / mean >= NOISE_THRESHOLD),
        "samples_us": [round(s / 1000) for s in samples_ns],
    }
