"""What ``edgebench run`` asks of a run, in one dataclass: a JobSpec template every job is made from
(runs, warmup, seconds, timeout, seed, ...), the thread counts, eval data, drift thresholds and the
fleet settings. Validated once, here."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import AgentError
from agent.job import MAX_THREADS, JobSpec, check_seconds
from controller import defaults
from controller.errors import UsageError
from controller.variants.scoring import Thresholds

MAX_PARALLEL = 1024  #: devices worked on at once (a thread each)


@dataclass
class RunOptions:
    """Everything ``edgebench run`` asks of a run (one dataclass travels, not a dozen arguments)."""

    #: the measurement settings every job starts from (runs, warmup, seconds, timeout, seed ...); each
    #: job is this template with its model, id and threads filled in
    job: JobSpec = field(default_factory=lambda: JobSpec(model="", timeout=defaults.JOB_TIMEOUT))
    threads: tuple[int, ...] = (1,)
    #: XNNPACK on / off, swept like threads (default: the template's setting only)
    xnnpack: tuple[bool, ...] = ()
    #: batch sizes swept for models whose inputs have a dynamic batch (first) dimension; () = no sweep
    batch_sizes: tuple[int, ...] = ()
    eval_data: str | None = None  #: .npz with x (and y): outputs saved, accuracy computed
    use_manifest_eval: bool = True  #: use a family's own eval set when --eval is not given
    thresholds: Thresholds = field(default_factory=Thresholds)  #: when a variant counts as drifted
    parallel: int = defaults.PARALLEL_DEVICES
    out_dir: str = defaults.OUT_DIR
    shuffle_seed: int | None = None
    lock_timeout: float | None = None  #: overrides each device's lock_timeout
    agent_pyz: str = ""
    #: devices start measuring together, after all are prepared (when all run at once)
    sync_start: bool = True
    sync_start_timeout: float = defaults.SYNC_START_TIMEOUT
    reconnect_attempts: int = defaults.RECONNECT_ATTEMPTS  #: daemon devices, after a dropped link
    reconnect_backoff: float = defaults.RECONNECT_BACKOFF  #: seconds before the first reconnect (doubling)

    def __post_init__(self) -> None:
        """Validate once, here at the controller (the agent validates again: it is a trust boundary).
        Raises UsageError."""
        try:
            self.job.validate()
        except AgentError as exc:
            raise UsageError(f"bad measurement setting: {exc}") from exc
        if not self.threads or min(self.threads) < 1 or max(self.threads) > MAX_THREADS:
            raise UsageError(f"threads must be integers from 1 to {MAX_THREADS}, got {list(self.threads)}")
        if self.batch_sizes and min(self.batch_sizes) < 1:
            raise UsageError(f"batch sizes must be integers >= 1, got {list(self.batch_sizes)}")
        if self.job.inputs and not os.path.isfile(self.job.inputs):
            raise UsageError(f"inputs file {self.job.inputs} does not exist; give a .npy/.npz of input data")
        if not 1 <= self.parallel <= MAX_PARALLEL:
            raise UsageError(f"parallel must be between 1 and {MAX_PARALLEL}, got {self.parallel}")
        if self.lock_timeout is not None:
            try:
                check_seconds("--lock-timeout", self.lock_timeout)
            except AgentError as exc:
                raise UsageError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def job_template(*, delegate: str | None = None, input_shapes: Sequence[str] = (), inputs: str | None = None,
                 **fields: Any) -> JobSpec:
    """The JobSpec template of a run from what the user typed: ``delegate`` "PATH.so[:K=V,...]",
    ``input_shapes`` ["NAME=d1,d2", ...], ``inputs`` a local .npy/.npz (made absolute), ``fields`` the
    other JobSpec fields (``cpus`` is checked as a placement). Raises UsageError naming the option
    (--cpus, --delegate, --input-shape, --inputs); the numbers are validated by :class:`RunOptions`."""
    from agent.cpus import check_placement
    from agent.delegation import parse_spec
    from agent.job import parse_input_shapes

    if inputs and not os.path.isfile(inputs):
        raise UsageError(f"--inputs {inputs} does not exist; give a .npy/.npz of input data")
    try:
        check_placement(fields.get("cpus"))
    except AgentError as exc:
        raise UsageError(f"--{exc}") from exc
    delegate_path, delegate_options = None, {}
    try:
        if delegate:
            delegate_path, delegate_options = parse_spec(delegate)
        shapes = parse_input_shapes(list(input_shapes))
    except (ValueError, AgentError) as exc:
        raise UsageError(f"--delegate: {exc}" if "delegate" in str(exc) else str(exc)) from exc
    return JobSpec(model="", delegate=delegate_path, delegate_options=delegate_options, input_shapes=shapes,
                   inputs=os.path.abspath(inputs) if inputs else None, **fields)
