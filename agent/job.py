"""What one job asks for: a model, threads, runtime, delegate and measurement settings.

A :class:`JobSpec` travels as a JSON object (``to_dict`` / ``from_dict``): the controller writes a list
of them to a job file that ``python -m agent batch`` reads, and the result document echoes it under
``job``. Unknown keys are refused, so a typo in a job file is a clear error, not a silent default.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from agent.cpus import check_placement
from agent.errors import UsageError

RUNTIME_CHOICES = ("auto", "ai-edge-litert", "tflite-runtime", "tensorflow")
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")  #: a job id names its result files


def check_job_id(job_id: object) -> str:
    """``job_id`` if it is 1-200 of ``A-Z a-z 0-9 . _ -`` (it names files); raises UsageError otherwise."""
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        raise UsageError(f"id {job_id!r} must be 1-200 of A-Z a-z 0-9 . _ - (it names the result file)")
    return job_id


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
    # Placement and repeats (schema v2): see agent/cpus.py and agent/repeats.py.
    cpus: str | None = None  #: all | big | little | a CPU list "0,2-3"; None = no pinning
    repeat: int = 1  #: measure in this many fresh worker processes; headline p50 = median of their p50s
    cooldown: float = 0.0  #: seconds of pause before each worker process but the first (and between jobs)
    run_delay: float = 0.0  #: seconds of pause between two timed invocations (benchmark_model's run_delay)
    delegate: str | None = None  #: path of an external delegate library (.so) on the device
    delegate_options: dict[str, str] = field(default_factory=dict)  #: its key=value options
    #: per-op profile plan (agent/profile.py): single-op models to time after the whole model, or None
    profile: dict[str, Any] | None = None
    # Free-form labels the controller wants echoed back (variant, model name, sha256 ...).
    meta: dict[str, Any] = field(default_factory=dict)

    def device_seconds(self, grace: float = 30.0) -> float:
        """The longest this job may take on a device: each of its ``repeat`` workers up to ``timeout`` plus
        ``grace``, with a ``cooldown`` before each (the bound a controller waits for it)."""
        return self.repeat * (self.timeout + grace + self.cooldown)

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
        check_placement(self.cpus)
        for name in ("cooldown", "run_delay"):
            check_seconds(name, getattr(self, name))
        if self.delegate is not None and not str(self.delegate).strip():
            raise UsageError("delegate must be the path of a delegate library, got an empty string")
        if not isinstance(self.delegate_options, dict):
            raise UsageError(f"delegate_options must be an object of key: value, got {self.delegate_options!r}")
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
MAX_REPEAT = 1000  #: fresh worker processes per job
INT_RANGES = {"threads": (1, MAX_THREADS), "warmup": (0, MAX_RUNS), "runs": (1, MAX_RUNS), "seed": (0, MAX_SEED),
              "repeat": (1, MAX_REPEAT)}
SECONDS_SETTINGS = ("warmup_min_seconds", "min_seconds", "max_seconds", "timeout")


def check_seconds(name: str, value: object) -> None:
    """Raise UsageError naming ``name`` unless ``value`` is a finite number of seconds in [0, MAX_SECONDS]
    (NaN, infinity, negative, huge and non-numbers are refused). The one rule for every duration the agent
    takes (job settings incl. cooldown / run_delay, ``batch --lock-timeout`` / ``--cooldown``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number of seconds, got {value}")
    if not 0 <= value <= MAX_SECONDS:
        raise UsageError(f"{name} must be between 0 and {MAX_SECONDS:g} seconds, got {value:g}")


def parse_input_shapes(items: list) -> dict[str, list[int]]:
    """``["seq=1,12,4", ...]`` (``--input-shape``) -> ``{"seq": [1, 12, 4]}``. Raises UsageError naming the
    bad item and the form."""
    shapes = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        try:
            values = [int(d) for d in dims.split(",")]
        except ValueError:
            values = []
        if not sep or not name or not values or min(values) < 1:
            raise UsageError(f"--input-shape {item!r}: give NAME=d1,d2,... with positive integers, e.g. "
                             "seq=1,12,4")
        shapes[name] = values
    return shapes
