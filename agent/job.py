"""What one job asks for: a model, threads, runtime, delegate and measurement settings.

A :class:`JobSpec` travels as a JSON object (``to_dict`` / ``from_dict``): the controller writes a list
of them to a job file that ``python -m agent batch`` reads, and the result document echoes it under
``job``. Unknown keys are refused, so a typo in a job file is a clear error, not a silent default.
"""

from __future__ import annotations

import dataclasses
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
        """Raise UsageError when a setting is out of range."""
        if self.runtime not in RUNTIME_CHOICES:
            raise UsageError(f"runtime must be one of {RUNTIME_CHOICES}, got {self.runtime!r}")
        if int(self.threads) < 1:
            raise UsageError(f"threads must be >= 1, got {self.threads}")
        if int(self.warmup) < 0:
            raise UsageError(f"warmup must be >= 0, got {self.warmup}")
        if int(self.runs) < 1:
            raise UsageError(f"runs must be >= 1, got {self.runs}")
        for name in ("min_seconds", "warmup_min_seconds", "max_seconds", "timeout"):
            if float(getattr(self, name)) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.timeout <= 0:
            raise UsageError("timeout must be > 0")
        check_placement(self.cpus)
        if int(self.repeat) < 1:
            raise UsageError(f"repeat must be >= 1, got {self.repeat}")
        for name in ("cooldown", "run_delay"):
            if float(getattr(self, name)) < 0:
                raise UsageError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        if self.delegate is not None and not str(self.delegate).strip():
            raise UsageError("delegate must be the path of a delegate library, got an empty string")
        if not isinstance(self.delegate_options, dict):
            raise UsageError(f"delegate_options must be an object of key: value, got {self.delegate_options!r}")
        if self.profile is not None:
            from agent.profile import check_plan

            check_plan(self.profile)


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
