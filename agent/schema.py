"""The result document: versioned JSON that crosses the wire from agent to controller.

History of SCHEMA_VERSION (readers refuse newer versions, migrate older ones with :func:`upgrade`):
  1 - first version: status, error, job, model, runtime, timing, memory, env (DESIGN.md).
  2 - numbers you can trust on a real board: ``flags`` (noisy / throttled / partial, the controller
      adds drift), ``processes`` (one summary per worker process; ``timing.p50_ms`` is the median of
      their p50s), ``memory.model_peak_kb`` / ``model_baseline_kb``, ``energy``, ``state`` (machine
      state before/after for the job's CPUs), ``canary``, ``env.affinity`` / ``env.cluster`` /
      ``env.cpus_requested``, ``runtime.delegate`` / ``delegate_options`` / ``delegation``,
      ``timing.process_count`` / ``between_process_cv``. Version-1 documents migrate with these keys
      None / [] (flags derived from timing.noisy and stop_reason) and ``migrated_from: 1``.
"""

import contextlib
import copy
import json
import os
from pathlib import Path
from typing import Any

from agent.errors import SchemaError

SCHEMA_VERSION = 2

STATUSES = ("ok", "error", "timeout", "crashed")

# Top-level keys every consumer may rely on. More may be added freely; renaming one needs a bump.
TOP_LEVEL_KEYS = ("schema_version", "status", "error", "job", "model", "runtime", "timing", "memory", "env",
                  "flags", "processes", "energy", "state", "canary")

# flags: what a reader must not miss about an "ok" number.
FLAG_NOISY = "noisy"  #: std/mean >= 10 % within a process, or between processes (pyperf's rule)
FLAG_THROTTLED = "throttled"  #: the throttle canary ran > 1.10x slower after the job, or firmware bits
FLAG_PARTIAL = "partial"  #: the max_seconds cap stopped the timed runs before runs / min_seconds
FLAG_DRIFT = "drift"  #: added by the controller: accuracy vs fp32 past its threshold
FLAGS = (FLAG_NOISY, FLAG_THROTTLED, FLAG_PARTIAL, FLAG_DRIFT)

# error.kind values the agent produces (consumers may see others later; treat unknown as generic):
#   "not_a_model"       file is not a TFLite flatbuffer / is truncated / names a tensor in invalid UTF-8 /
#                       is not a regular file (a directory, FIFO, device: "is a FIFO ..., not a regular file")
#   "unresolved_op"     custom op the runtime does not have
#   "flex_op"           Select-TF (Flex) op; needs the TensorFlow runtime or the flex delegate
#   "dynamic_shape"     an input has unknown dimensions; give --input-shape NAME=d1,d2,...
#   "bad_inputs"        --inputs file does not match the model's inputs
#   "unsupported_op"    a builtin op (or op version) the runtime is too old for; use a newer runtime
#   "no_runtime"        the runtime asked for cannot be imported on this device
#   "missing_model"     the model file does not exist / is not readable (permission) / is a symlink loop
#   "internal"          a bug in the agent (the message holds the traceback's last line)
#   "runtime_error"     anything else the runtime raised
#   "signal"            worker killed by a signal (status "crashed")
#   "timeout"           worker passed its deadline (status "timeout")
#   "worker_failed"     worker exited without writing a document
#   "disk_full"         the device's disk filled up while the job wrote its outputs (message: free space, fix)
#   "bad_placement"     the job's cpus name CPUs this device does not have online   (v2)
#   "delegate_load"     the external delegate library is missing / not a delegate  (v2)
#   "delegate_rejected" the delegate failed to prepare the model                    (v2)
#   "cancelled"         agent daemon: cancelled by a client (daemon-client cancel)
#   "daemon_died"       agent daemon: the daemon died while the job measured (status "crashed"; not re-run)

TIMING_KEYS = ("init_ms", "first_inference_ms", "count", "mean_ms", "std_ms", "min_ms", "max_ms", "p50_ms",
               "p90_ms", "p99_ms", "warmup_count", "warmup_ms", "noisy", "stop_reason", "samples_us",
               "process_count", "between_process_cv")
MEMORY_KEYS = ("rss_before_load_kb", "rss_after_init_kb", "peak_rss_kb", "model_peak_kb", "model_baseline_kb")
RUNTIME_KEYS = ("name", "version", "module", "num_threads", "xnnpack_requested", "delegates", "delegate",
                "delegate_options", "delegation")
ENERGY_KEYS = ("mj_per_inference", "source", "idle_mw", "active_mw", "inferences", "seconds", "reason")
CANARY_KEYS = ("before_us", "after_us", "ratio", "throttled")
ENV_V2_KEYS = ("affinity", "cluster", "cpus_requested")


def new_document(job: dict, model_path: str, env: dict) -> dict:
    """A result document for ``job`` with every top-level key present and nothing measured yet.

    ``timing``, ``memory`` and ``runtime`` hold every key with value None until measured, so a failed
    job has the same columns as a good one. Standard library only (the runner builds documents for
    crashed / timed-out workers without numpy).
    """
    env = dict(env)
    for key in ENV_V2_KEYS:
        env.setdefault(key, None)
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "error",
        "error": None,
        "job": job,
        "model": {"path": model_path, "sha256": None, "bytes": None, "inputs": [], "outputs": []},
        "runtime": {key: None for key in RUNTIME_KEYS},
        "timing": {key: None for key in TIMING_KEYS},
        "memory": {key: None for key in MEMORY_KEYS},
        "env": env,
        "flags": [],
        "processes": [],
        "energy": {key: None for key in ENERGY_KEYS},
        "state": {"before": None, "after": None},
        "canary": {key: None for key in CANARY_KEYS},
        "warnings": [],
        "outputs_file": None,
    }


def add_flag(doc: dict, flag: str) -> None:
    """Add ``flag`` (one of FLAGS) to ``doc["flags"]`` once, keeping FLAGS order. Raises ValueError for
    an unknown flag."""
    if flag not in FLAGS:
        raise ValueError(f"unknown flag {flag!r}; flags are {FLAGS}")
    present = set(doc.setdefault("flags", [])) | {flag}
    doc["flags"] = [f for f in FLAGS if f in present]


def upgrade(doc: Any) -> dict:
    """``doc`` as a current-version document (a new dict; ``doc`` is left alone).

    Version-1 documents gain every version-2 key (None / [] / empty sections), flags derived from what
    they recorded (``timing.noisy`` -> noisy, ``stop_reason`` max_seconds -> partial) and
    ``migrated_from: 1``. Raises SchemaError for something that is not a result document and for a
    newer schema_version (naming it and what to do).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("schema_version"), int) or isinstance(
            doc.get("schema_version"), bool):
        raise SchemaError("not an edgebench result document (no integer schema_version)")
    version = doc["schema_version"]
    if version > SCHEMA_VERSION:
        raise SchemaError(f"result document has schema_version {version}, newer than this edgebench reads "
                          f"({SCHEMA_VERSION}); upgrade edgebench on the controller")
    if version < 1:
        raise SchemaError(f"result document has schema_version {version}; versions start at 1")
    out = copy.deepcopy(doc)
    if version == 1:
        out = _from_v1(out)
    return out


def _from_v1(doc: dict) -> dict:
    for section, keys in (("timing", TIMING_KEYS), ("memory", MEMORY_KEYS), ("runtime", RUNTIME_KEYS)):
        part = doc.get(section) if isinstance(doc.get(section), dict) else {}
        doc[section] = {**{key: None for key in keys}, **part}
    env = doc.get("env") if isinstance(doc.get("env"), dict) else {}
    doc["env"] = {**{key: None for key in ENV_V2_KEYS}, **env}
    doc["flags"] = []
    timing = doc["timing"]
    if timing.get("noisy"):
        add_flag(doc, FLAG_NOISY)
    if timing.get("stop_reason") == "max_seconds":
        add_flag(doc, FLAG_PARTIAL)
    doc["processes"] = []
    doc["energy"] = {**{key: None for key in ENERGY_KEYS}, "reason": "not measured (schema version 1)"}
    doc["state"] = {"before": None, "after": None}
    doc["canary"] = {key: None for key in CANARY_KEYS}
    doc["schema_version"] = SCHEMA_VERSION
    doc["migrated_from"] = 1
    return doc


def set_error(doc: dict, status: str, kind: str, message: str, stderr_tail: str = "") -> dict:
    """Mark ``doc`` failed with ``status`` (error / crashed / timeout) and the error's kind and message."""
    if status not in STATUSES or status == "ok":
        raise ValueError(f"not a failure status: {status!r}")
    doc["status"] = status
    doc["error"] = {"kind": kind, "message": message, "stderr_tail": stderr_tail}
    return doc


def write_json_atomic(path: Path, doc: dict) -> None:
    """Write ``doc`` as JSON to ``path`` via a temporary file and rename (readers never see half).

    Raises OSError when it cannot be written (a full disk included); the temporary file is removed then,
    so a failed write leaves nothing behind."""
    text = json.dumps(doc, allow_nan=False, default=_jsonable)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
