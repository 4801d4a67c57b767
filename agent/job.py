"""What one job asks for: a model, threads, runtime, delegate and measurement settings.

A :class:`JobSpec` travels as a JSON object (``to_dict`` / ``from_dict``): the controller writes a list
of them to a job file that ``python -m agent batch`` reads, and the result document echoes it under
``job``. Unknown keys are refused, so a typo in a job file is a clear error, not a silent default.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from agent.errors import UsageError

RUNTIME_CHOICES = ("auto", "ai-edge-litert", "tflite-runtime", "tensorflow")


@dataclass
class JobSpec:
    model: str  #: path of the .tflite file on this device
    id: str = "job"  #: unique within a batch; names the result files
    threads: int = 1
    runtime: str = "auto"  #: one of RUNTIME_CHOICES
    xnnpack: bool = True  #: False = run without the default XNNPACK delegate
    # Measurement rules (DESIGN.md): at least `warmup` runs AND `warmup_min_seconds`; at least `runs`
    # AND `min_seconds`, capped by `max_seconds`.
    warmup: int = 1
    warmup_min_seconds: float = 0.5
    runs: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 150.0
    timeout: float = 600.0  #: deadline of the worker process, seconds
    seed: int = 0  #: seed of the random inputs
    inputs: str | None = None  #: .npy/.npz of float (or exact-dtype) input data
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  #: resize of dynamic inputs
    save_outputs: str | None = None  #: .npz path: outputs of the inputs file (or of the random input)
    #: per-op profile plan (agent/profile.py): single-op models to time after the whole model, or None
    profile: dict[str, Any] | None = None
    # Free-form labels the controller wants echoed back (variant, model name, sha256 ...).
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Build a spec from a JSON object. Raises UsageError naming any unknown or missing key."""
        if not isinstance(data, dict):
            raise UsageError(f"a job must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown job key(s) {unknown}; known keys: {sorted(known)}")
        if "model" not in data:
            raise UsageError("a job needs a 'model' path")
        spec = cls(**data)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Raise UsageError naming the setting when one is of the wrong type, not finite, or out of range
        (the ranges are :data:`INT_RANGES` and :func:`check_seconds`)."""
        if self.runtime not in RUNTIME_CHOICES:
            raise UsageError(f"runtime must be one of {RUNTIME_CHOICES}, got {self.runtime!r}")
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"{name} must be a whole number, got {value!r}")
            if not low <= value <= high:
                raise UsageError(f"{name} must be between {low} and {high}, got {value}")
        for name in SECONDS_SETTINGS:
            check_seconds(name, getattr(self, name))
        if self.timeout <= 0:
            raise UsageError(f"timeout must be > 0 seconds, got {self.timeout:g}")
        if self.profile is not None:
            from agent.profile import check_plan

            check_plan(self.profile)


# Bounds of the numeric settings, checked by JobSpec.validate (README "Agent"). MAX_THREADS: no edge board
# has more cores, and the runtime segfaults on absurd counts (100000). MAX_SECONDS (one week) keeps every
# deadline a number the OS timers take (signal.alarm overflows on 1e300).
MAX_THREADS = 256
MAX_RUNS = 10**9  #: more than max_seconds lets run on any board; the loop stops at max_seconds anyway
MAX_SECONDS = 7 * 24 * 3600.0
MAX_SEED = 2**32 - 1
INT_RANGES = {"threads": (1, MAX_THREADS), "warmup": (0, MAX_RUNS), "runs": (1, MAX_RUNS), "seed": (0, MAX_SEED)}
SECONDS_SETTINGS = ("warmup_min_seconds", "min_seconds", "max_seconds", "timeout")


def check_seconds(name: str, value: object) -> None:
    """Raise UsageError naming ``name`` unless ``value`` is a finite number of seconds in [0, MAX_SECONDS]
    (NaN, infinity, negative, huge and non-numbers are refused). The one rule for every duration the agent
    takes (job settings, ``batch --lock-timeout`` / ``--cooldown``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number of seconds, got {value}")
    if not 0 <= value <= MAX_SECONDS:
        raise UsageError(f"{name} must be between 0 and {MAX_SECONDS:g} seconds, got {value:g}")
