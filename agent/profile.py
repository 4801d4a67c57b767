"""Per-op profile, on the device: time single-op models fed with the whole model's real intermediates.

A job with ``profile`` set (:class:`agent.job.JobSpec`) measures the whole model as usual, then, in the
same worker and after the timed loop:

1. **Which ops the delegate took**: the whole model's interpreter (as the job ran it) lists its nodes
   (``_get_ops_details``); each ``DELEGATE`` node replaced the operators that lie between its inputs and
   its outputs, found by walking back from its outputs. The rest run on the runtime's CPU kernels.
2. **The real intermediates**: a second interpreter of the whole model with
   ``experimental_preserve_all_tensors=True`` (and no delegate, so every tensor is kept) runs the job's
   first input sample once; the tensors that feed the single-op models are copied out.
3. **Each op alone**: the single-op model of each operator (cut by the controller, ``controller.model.op_cut``)
   is loaded with the job's thread count, with XNNPACK when the op is delegated in the whole model and
   without it when not (so it runs on the kernel it runs on in the whole model), its inputs set to the
   captured tensors, warmed up, and timed with the same loop as the whole model (``agent.measure``):
   only ``invoke()`` between the two clock reads. A cut that XNNPACK cannot run is timed on the CPU
   kernels and says so; an op that fails is an entry with its error, never the end of the profile.

The plan (``JobSpec.profile``): ``{"ops": [{"index", "op", "file", "inputs": [tensor index, ...],
"skipped": str|null}], "warmup", "warmup_min_seconds", "runs", "min_seconds", "max_seconds"}``.
The result (``doc["profile"]``): ``{"ops": [{"index", "op", "us" (p50 µs), "mean_us", "min_us",
"count", "samples_us", "delegated" (in the whole model: bool|null), "xnnpack" (the cut ran with it),
"error", "skipped"}], "sum_us", "model_p50_us", "ratio", "delegate_nodes", "settings"}``.
"""

from __future__ import annotations

import warnings
from typing import Any

from agent import measure
from agent.errors import UsageError

#: per-op measurement defaults: cheap (dozens of ops in seconds), still a p50 of at least 20 samples
OP_DEFAULTS = {"warmup": 3, "warmup_min_seconds": 0.01, "runs": 20, "min_seconds": 0.05, "max_seconds": 2.0}
_OP_KEYS = ("index", "op", "file", "inputs", "skipped")


def check_plan(plan: Any) -> None:
    """Raise UsageError unless ``plan`` is a profile plan (see the module docstring)."""
    if not isinstance(plan, dict) or not isinstance(plan.get("ops"), list) or not plan["ops"]:
        raise UsageError("profile must be an object with a non-empty list 'ops'")
    unknown = sorted(set(plan) - {"ops", *OP_DEFAULTS})
    if unknown:
        raise UsageError(f"unknown profile key(s) {unknown}; known: {sorted({'ops', *OP_DEFAULTS})}")
    for key in OP_DEFAULTS:
        if key in plan and (not isinstance(plan[key], (int, float)) or plan[key] < 0):
            raise UsageError(f"profile {key} must be a number >= 0, got {plan[key]!r}")
    for i, op in enumerate(plan["ops"]):
        if not isinstance(op, dict) or set(op) - set(_OP_KEYS) or not isinstance(op.get("index"), int):
            raise UsageError(f"profile op #{i} must be an object with keys {list(_OP_KEYS)} and an int index")
        if op.get("skipped") is None and (not isinstance(op.get("file"), str)
                                          or not isinstance(op.get("inputs"), list)):
            raise UsageError(f"profile op #{i} needs a 'file' and its 'inputs' (tensor indices)")


def delegated_ops(interpreter: Any) -> tuple[dict[int, bool] | None, int]:
    """(operator index -> taken by a delegate, number of DELEGATE nodes) of an allocated interpreter;
    (None, 0) when the runtime does not list its nodes. The walk is :func:`agent.delegation.taken_ops`,
    the same that counts a job's delegated ops."""
    from agent.delegation import taken_ops

    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return None, 0
    originals, partitions = taken_ops(details())
    taken = set().union(*(ops for _, ops in partitions))
    return {int(n["index"]): int(n["index"]) in taken for n in originals}, len(partitions)


def capture(runtime: Any, model_path: str, threads: int, input_shapes: dict, in_ios: list, sample: list,
            wanted: set[int]) -> dict[int, Any]:
    """Run the whole model once with every tensor preserved (no delegate where the runtime can turn it
    off) on ``sample`` and return copies of the ``wanted`` tensors, by tensor index. The runtime's
    exceptions propagate."""
    kwargs: dict = {"model_path": model_path, "num_threads": threads, "experimental_preserve_all_tensors": True}
    if runtime.no_default_delegates is not None:
        kwargs["experimental_op_resolver_type"] = runtime.no_default_delegates
    with warnings.catch_warnings():
        # The runtime warns that preserving every tensor costs memory: that is the point here.
        warnings.simplefilter("ignore")
        interpreter = runtime.interpreter_class(**kwargs)
    by_name = {d["name"]: d for d in interpreter.get_input_details()}
    for name, shape in input_shapes.items():
        interpreter.resize_tensor_input(by_name[name]["index"], [int(d) for d in shape], strict=True)
    interpreter.allocate_tensors()
    for io, value in zip(in_ios, sample):
        interpreter.set_tensor(io["index"], value)
    interpreter.invoke()
    return {t: interpreter.get_tensor(t).copy() for t in sorted(wanted)}


def time_op(runtime: Any, entry: dict, feeds: dict[int, Any], threads: int, xnnpack: bool,
            settings: dict) -> dict:
    """Time ``entry``'s single-op model fed with ``feeds`` (tensor index -> array); returns the op's
    result entry. With ``xnnpack`` and a cut the delegate cannot run, it is timed on the CPU kernels and
    ``xnnpack_error`` says why. Raises what the runtime raises otherwise."""
    result: dict = {"xnnpack": xnnpack, "xnnpack_error": None}
    try:
        interpreter = _ready(runtime, entry, feeds, threads, xnnpack)
    except Exception as exc:  # the delegate refused the cut: time it on the CPU kernels instead
        if not xnnpack or runtime.no_default_delegates is None:
            raise
        result.update(xnnpack=False, xnnpack_error=_first_line(exc))
        interpreter = _ready(runtime, entry, feeds, threads, False)
    result["xnnpack_alone"] = _has_delegate(interpreter)
    invoke = interpreter.invoke
    measure.timed_loop(invoke, int(settings["warmup"]), float(settings["warmup_min_seconds"]),
                       float(settings["max_seconds"]))
    loop = measure.timed_loop(invoke, int(settings["runs"]), float(settings["min_seconds"]),
                              float(settings["max_seconds"]))
    ordered = sorted(loop.samples_ns)
    result.update(us=measure.percentile(ordered, 50) / 1e3, mean_us=sum(ordered) / len(ordered) / 1e3,
                  min_us=ordered[0] / 1e3, count=len(ordered),
                  samples_us=[round(s / 1e3, 2) for s in loop.samples_ns])
    return result


def _ready(runtime: Any, entry: dict, feeds: dict[int, Any], threads: int, xnnpack: bool) -> Any:
    """An interpreter of the cut, inputs resized to the captured shapes and set, invoked once."""
    interpreter = runtime.interpreter(entry["file"], threads, xnnpack)
    details = interpreter.get_input_details()
    values = [feeds[t] for t in entry["inputs"]]
    for detail, value in zip(details, values):
        if list(detail["shape"]) != list(value.shape):
            interpreter.resize_tensor_input(detail["index"], list(value.shape), strict=False)
    interpreter.allocate_tensors()
    for detail, value in zip(details, values):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    return interpreter


def _has_delegate(interpreter: Any) -> bool | None:
    details = getattr(interpreter, "_get_ops_details", None)
    return None if details is None else any(n.get("op_name") == "DELEGATE" for n in details())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {(text.splitlines() or [''])[0][:300]}"


def profile(spec: Any, runtime: Any, whole: Any, in_ios: list, sample: list, model_p50_ms: float) -> dict:
    """The per-op profile of the module docstring for the job ``spec`` (a JobSpec with ``profile`` set).
    ``whole`` is the job's allocated interpreter of the whole model, ``sample`` the input values it ran,
    ``model_p50_ms`` its p50. Never raises for one op's failure (that op's entry carries ``error``);
    raises what the runtime raises when the intermediates cannot be captured."""
    plan, threads, xnnpack = spec.profile, spec.threads, spec.xnnpack
    settings = {key: plan.get(key, default) for key, default in OP_DEFAULTS.items()}
    delegated, delegate_nodes = delegated_ops(whole)
    entries = plan["ops"]
    wanted = {int(t) for e in entries if e.get("skipped") is None for t in e["inputs"]}
    feeds = capture(runtime, str(spec.model), threads, spec.input_shapes, in_ios, sample, wanted)
    ops = []
    for entry in entries:  # bounded by the plan
        taken = None if delegated is None else delegated.get(int(entry["index"]))
        row: dict = {"index": int(entry["index"]), "op": entry.get("op"), "us": None, "delegated": taken,
                     "error": None, "skipped": entry.get("skipped")}
        if row["skipped"] is None:
            use_xnnpack = bool(xnnpack and (taken is not False))
            try:
                row.update(time_op(runtime, entry, feeds, threads, use_xnnpack, settings))
            except Exception as exc:  # noqa: BLE001 - one op that cannot run is data, the others go on
                row["error"] = _first_line(exc)
        ops.append(row)
    timed = [r["us"] for r in ops if r["us"] is not None]
    total = sum(timed)
    model_us = model_p50_ms * 1e3
    return {"ops": ops, "sum_us": total, "model_p50_us": model_us,
            "ratio": total / model_us if model_us > 0 else None, "delegate_nodes": delegate_nodes,
            "timed_ops": len(timed), "settings": settings}
