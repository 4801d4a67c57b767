"""The throttle canary: a fixed small CPU workload timed before and after a job, outside its timed loop.

The same pure-Python work (integer arithmetic, no allocation worth the name) on the same pinned CPUs
should take the same time before and after the job; when it takes more than ``THROTTLE_RATIO`` times
as long afterwards, the CPU got slower during the job (thermal or firmware throttling, a governor
that dropped the clock) and the job is flagged ``throttled``. Each reading is the best of ``ROUNDS``
short rounds, so one preemption does not raise it. Standard library only; the clock is injected.
"""

from __future__ import annotations

import time
from typing import Callable

THROTTLE_RATIO = 1.10  #: after / before above this flags the job throttled
ROUNDS = 5
WORK = 20_000  #: loop iterations per round (~1-2 ms of CPython on a laptop core, ~10 ms on a Pi Zero)


def _work(n: int) -> int:
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc


def measure(clock: Callable[[], int] = time.perf_counter_ns, rounds: int = ROUNDS, work: int = WORK) -> float:
    """Microseconds of the fastest of ``rounds`` rounds of the fixed workload."""
    best = None
    for _ in range(rounds):
        t0 = clock()
        _work(work)
        elapsed = clock() - t0
        best = elapsed if best is None or elapsed < best else best
    return (best or 0) / 1000.0


def verdict(before_us: float | None, after_us: float | None) -> dict:
    """``{"before_us", "after_us", "ratio", "throttled"}``; ratio and throttled None when a reading is
    missing or zero."""
    if not before_us or not after_us:
        return {"before_us": before_us, "after_us": after_us, "ratio": None, "throttled": None}
    ratio = after_us / before_us
    return {"before_us": before_us, "after_us": after_us, "ratio": ratio, "throttled": ratio > THROTTLE_RATIO}
