"""Test hooks of the fleet run, honoured ONLY when their variables are set (never by edgebench itself).

The signal tests (tests/test_signals.py) use them to interrupt the controller inside a known step.
"""

from __future__ import annotations

import os
import time
from typing import Callable

#: Test hooks (honoured ONLY when set; the signal tests use them to interrupt the controller at a known
#: step): EDGEBENCH_TEST_PHASE_DIR=DIR touches DIR/<phase> when a step starts (connect, agent, info,
#: preflight, push, gate, batch, fetch, accuracy; "write" before the final tables);
#: EDGEBENCH_TEST_HOLD=<phase> then waits there up to 60 s (until interrupted).
TEST_PHASE_DIR_ENV = "EDGEBENCH_TEST_PHASE_DIR"
TEST_HOLD_ENV = "EDGEBENCH_TEST_HOLD"


def enter_step(phase: str, stopping: Callable[[], bool] = lambda: False) -> None:
    """See TEST_PHASE_DIR_ENV. Does nothing unless the test variables are set."""
    folder = os.environ.get(TEST_PHASE_DIR_ENV)
    if not folder:
        return
    with open(os.path.join(folder, phase), "w", encoding="utf-8"):
        pass
    if os.environ.get(TEST_HOLD_ENV) == phase:
        end = time.monotonic() + 60
        while time.monotonic() < end and not stopping():
            time.sleep(0.05)
