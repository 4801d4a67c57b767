"""The result document: versioned JSON that crosses the wire from agent to controller.

History of SCHEMA_VERSION (readers refuse newer versions, migrate older ones):
  1 - first version: status, error, job, model, runtime, timing, memory, env (DESIGN.md).
"""

import contextlib
import json
import os
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

STATUSES = ("ok", "error", "timeout", "crashed")

# Top-level keys every consumer may rely on. More may be added freely; renaming one needs a bump.
TOP_LEVEL_KEYS = ("schema_version", "status", "error", "job", "model", "runtime", "timing", "memory", "env")

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

TIMING_KEYS = ("init_ms", "first_inference_ms", "count", "mean_ms", "std_ms", "min_ms", "max_ms", "p50_ms",
               "p90_ms", "p99_ms", "warmup_count", "warmup_ms", "noisy", "stop_reason", "samples_us")
MEMORY_KEYS = ("rss_before_load_kb", "rss_after_init_kb", "peak_rss_kb")
RUNTIME_KEYS = ("name", "version", "module", "num_threads", "xnnpack_requested", "delegates")


def new_document(job: dict, model_path: str, env: dict) -> dict:
    """A result document for ``job`` with every top-level key present and nothing measured yet.

    ``timing``, ``memory`` and ``runtime`` hold every key with value None until measured, so a failed
    job has the same columns as a good one. Standard library only (the runner builds documents for
    crashed / timed-out workers without numpy).
    """
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
        "warnings": [],
        "outputs_file": None,
    }


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
