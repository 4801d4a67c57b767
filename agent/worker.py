"""The worker: one job, measured in this (fresh) process, its document written to a file.

Started by :mod:`agent.runner` as ``<python> -c <boot> JOB.json RESULT.json``. It writes
RESULT.json atomically: once after the model is loaded (``"_stage": "loaded"``, so a crash later still
reports the model and runtime) and once at the end. Nothing goes to stdout; the runtime's own logging
goes to stderr, whose tail the runner keeps. Every failure the worker can see becomes a document with
status ``error``; a crash (signal) or a hang is classified by the runner.

Test hooks (honoured ONLY when the variable is set; never set by the agent itself):
  EDGEBENCH_AGENT_TEST_FAULT=segv|hang|exit  -- after the model is loaded, kill this process with
      SIGSEGV / sleep past any deadline / exit 3 without a final document
  EDGEBENCH_AGENT_TEST_SKIP_PRECHECK=1       -- hand the model to the runtime without the
      agent.modelfile pre-check (shows what the pre-check prevents: tflite-runtime segfaults on a
      truncated model)
  EDGEBENCH_AGENT_DEBUG_MODULES=1            -- add ``debug.modules``: sorted top-level module names
      in sys.modules at the end of the job (the test of "stdlib + numpy + runtime only" reads it)
  EDGEBENCH_AGENT_SYSFS_ROOT=DIR             -- read clusters, CPU state and energy sensors under DIR
      (``DIR/sys/...``) instead of / (also for a host /sys bind-mounted elsewhere)

Order of a job (docs/internals.md "The measuring worker"): pin to the job's CPUs (before the runtime
is imported, so its threads inherit the affinity) -> machine state before -> load the runtime and any
external delegate -> construct the interpreter, resize, prepare the inputs -> reset the peak RSS ->
allocate (init time = construct + allocate) -> idle power -> canary -> first inference, warmup ->
[energy counters] timed loop [energy counters] -> canary -> machine state after -> model peak ->
sampled-power pass (power sensors only) -> outputs. Nothing new sits inside the timed loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from agent import (
    canary,
    cpus,
    delegation,
    disk_full,
    energy,
    measure,
    modelfile,
    probes,
    profile,
    runtimes,
    schema,
    state,
)
from agent.errors import JobFailed, UsageError
from agent.failures import classify, first_line
from agent.job import JobSpec

FAULT_ENV = "EDGEBENCH_AGENT_TEST_FAULT"
DEBUG_MODULES_ENV = "EDGEBENCH_AGENT_DEBUG_MODULES"
SKIP_PRECHECK_ENV = "EDGEBENCH_AGENT_TEST_SKIP_PRECHECK"
ORPHAN_GRACE_S = 30  #: the worker's own alarm fires up to this long after the runner's deadline
THROTTLE_RISE_C = 10.0  #: a temperature rise at least this large during a job suspects throttling
#: The process's peak RSS just before the model's peak is measured from scratch (one job per process).
_PEAK_BEFORE_RESET_KB: dict = {}


def main(job_file: str, result_file: str) -> int:
    """Run the job of ``job_file``, write its document to ``result_file``; return 0 when a document was
    written (whatever the job's status)."""
    spec = JobSpec.from_dict(json.loads(Path(job_file).read_text()))
    # Watchdog for an orphan: the runner kills this process at job.timeout; should the runner itself die
    # first (SSH dropped, agent killed), SIGALRM ends the worker a little later instead of never.
    signal.alarm(int(spec.timeout + min(ORPHAN_GRACE_S, max(2.0, spec.timeout / 2))) + 1)
    out = Path(result_file)
    doc = schema.new_document(spec.to_dict(), spec.model, probes.environment())
    doc["worker"] = {"pid": os.getpid(), "python": sys.executable}
    try:
        _run(spec, doc, lambda: schema.write_json_atomic(out, dict(doc, _stage="loaded")))
        doc["status"] = "ok"
    except JobFailed as exc:
        schema.set_error(doc, "error", exc.kind, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug in the agent: still a document, with its traceback
        tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
        schema.set_error(doc, "error", "internal", f"agent bug: {type(exc).__name__}: {exc}", tail)
    _finish(doc)
    _add_environment_warnings(doc)
    if os.environ.get(DEBUG_MODULES_ENV):
        doc["debug"] = {"modules": sorted({name.split(".")[0] for name in sys.modules})}
    schema.write_json_atomic(out, doc)
    return 0


def _run(spec: JobSpec, doc: dict, checkpoint: Callable[[], None]) -> None:
    root = probes.sysfs_root()
    affinity = _place(spec, doc, root)
    model_path = Path(spec.model)  # (its sha256 and size are added by the runner, once per file)
    if os.environ.get(SKIP_PRECHECK_ENV):
        custom_ops: list = []  # test hook: let the runtime see the file as it is (it may crash)
    else:
        custom_ops = modelfile.check(model_path)

    runtime = runtimes.load_requested(spec.runtime)
    doc["runtime"].update(name=runtime.spec.name, version=runtime.version, module=runtime.spec.module,
                          num_threads=spec.threads, xnnpack_requested=spec.xnnpack, delegate=spec.delegate,
                          delegate_options=dict(spec.delegate_options))
    external = [delegation.load(runtime, spec.delegate, spec.delegate_options)] if spec.delegate else []
    # numpy is imported only now, after the runtime (which imports it anyway).
    from agent import tensors

    loaded = _load(spec, runtime, custom_ops, doc, external)
    interpreter, samples = loaded["interpreter"], loaded["samples"]
    in_ios = [tensors.describe(d) for d in interpreter.get_input_details()]
    out_ios = [tensors.describe(d) for d in interpreter.get_output_details()]
    doc["model"].update(inputs=in_ios, outputs=out_ios)
    counted = delegation.count(interpreter, loaded["external_nodes"], spec.delegate, spec.xnnpack)
    doc["runtime"].update(delegation=counted, delegates=delegation.applied(counted))
    checkpoint()
    _test_fault()
    _set_inputs(interpreter, in_ios, samples.sample(0))

    meter = energy.find(root)
    idle, energy_reason = None, None
    if meter is not None:
        try:
            idle = energy.idle_uw(meter)
        except OSError as exc:
            meter, energy_reason = None, f"energy sensor unreadable: {exc}"
    canary_before = canary.measure()
    invoke = interpreter.invoke
    t0 = time.perf_counter_ns()
    _guard(invoke, "the first inference", runtime)
    first_ns = time.perf_counter_ns() - t0
    warm = _guard(lambda: measure.timed_loop(invoke, spec.warmup, spec.warmup_min_seconds,
                                             spec.max_seconds), "warmup", runtime)
    counting = meter is not None and not meter.sampled
    counters_before = meter.read_counters() if counting else None
    if spec.run_delay > 0:
        loop = _guard(lambda: measure.paced_loop(invoke, spec.runs, spec.min_seconds, spec.max_seconds,
                                                 spec.run_delay), "the timed runs", runtime)
    else:
        loop = _guard(lambda: measure.timed_loop(invoke, spec.runs, spec.min_seconds, spec.max_seconds),
                      "the timed runs", runtime)
    counters_after = meter.read_counters() if counting else None
    doc["canary"] = canary.verdict(canary_before, canary.measure())
    doc["state"]["after"] = state.snapshot(affinity, root)
    peak = _peak_kb(doc)
    if loaded["baseline_kb"] is not None and peak is not None:
        # the interpreter's construction (before the inputs were prepared) + its peak over the baseline
        doc["memory"]["model_peak_kb"] = loaded["constructed_kb"] + max(0, peak - loaded["baseline_kb"])

    if counting:
        doc["energy"] = energy.result(meter, idle, meter.delta_uj(counters_before, counters_after),
                                      loop.elapsed_ns / 1e9, len(loop.samples_ns))
    elif meter is not None:  # sampled power: a pass of its own, so no thread runs during the timed loop
        sampler = energy.PowerSampler(meter).start()
        extra = _guard(lambda: measure.timed_loop(invoke, 1, energy.PASS_SECONDS, 2 * energy.PASS_SECONDS),
                       "the energy pass", runtime)
        energy_uj, seconds, _ = sampler.stop()
        doc["energy"] = energy.result(meter, idle, energy_uj, seconds, len(extra.samples_ns))
    else:
        doc["energy"] = energy.result(None, None, None, None, None, energy_reason)

    stats = measure.statistics(loop.samples_ns)
    doc["timing"].update(stats, init_ms=loaded["init_ns"] / 1e6, first_inference_ms=first_ns / 1e6,
                         warmup_count=len(warm.samples_ns), warmup_ms=warm.elapsed_ns / 1e6,
                         stop_reason=loop.stop_reason, process_count=1)
    del warm  # its samples are not reported; free them before the outputs pass
    _flag(spec, doc, stats, loop)
    if spec.profile:
        doc["profile"] = _guard(lambda: profile.profile(spec, runtime, interpreter, in_ios, samples.sample(0),
                                                        stats["p50_ms"]), "the per-op profile", runtime)
    if spec.save_outputs:
        doc["outputs_file"] = _save_outputs(spec.save_outputs, interpreter, in_ios, out_ios, samples, runtime)


def _place(spec: JobSpec, doc: dict, root: Path) -> list:
    """Pin this worker to the job's CPUs, record ``env.affinity`` / ``env.cluster`` and the machine state
    before the job; return the CPU ids. Raises JobFailed("bad_placement") for CPUs this device lacks."""
    try:
        affinity = cpus.pin(cpus.resolve(spec.cpus, root))
    except UsageError as exc:
        raise JobFailed("bad_placement", str(exc)) from exc
    env = doc["env"]
    env.update(affinity=affinity, cluster=cpus.label(affinity, cpus.clusters(root)), cpus_requested=spec.cpus)
    if spec.threads > len(affinity):
        doc["warnings"].append(f"{spec.threads} threads on {len(affinity)} CPU(s) {affinity}: the threads share "
                               "CPUs and the latency measures the contention; use --threads <= the pinned CPUs")
    before = state.snapshot(affinity, root)
    doc["state"]["before"] = before
    env.update(governor=state.governor_of(before), freq_mhz=state.freq_of(before) or env.get("freq_mhz"),
               temp_c_before=before["temp_c"])
    return affinity


def _flag(spec: JobSpec, doc: dict, stats: dict, loop: measure.Loop) -> None:
    """Flags and warnings of one process: noisy, partial, throttled."""
    if stats["noisy"]:
        schema.add_flag(doc, schema.FLAG_NOISY)
        doc["warnings"].append(f"noisy: std/mean = {stats['std_ms'] / stats['mean_ms']:.0%} "
                               f"(>= {measure.NOISE_THRESHOLD:.0%}); close other load, pin the governor, "
                               "or raise --min-seconds")
    if loop.stop_reason == measure.STOP_CAP:
        schema.add_flag(doc, schema.FLAG_PARTIAL)
        doc["warnings"].append(f"stopped at max_seconds={spec.max_seconds} after {len(loop.samples_ns)} runs "
                               f"(asked: {spec.runs} runs and {spec.min_seconds:g} s)")
    reasons = state.throttle_reasons(doc["state"]["before"] or {}, doc["state"]["after"] or {})
    if doc["canary"]["throttled"]:
        reasons.insert(0, f"the throttle canary ran {doc['canary']['ratio']:.2f}x slower after the job "
                       f"(> {canary.THROTTLE_RATIO:.2f}x)")
    if reasons:
        schema.add_flag(doc, schema.FLAG_THROTTLED)
        doc["warnings"].append("throttled: " + "; ".join(reasons) + "; cool the board, add --cooldown, or "
                               "pin a governor")


def _finish(doc: dict) -> None:
    """What every document gets, whatever happened: the state after (for a job that failed before its
    timed loop too), temperature and frequency after, the process's peak RSS."""
    affinity = doc["env"].get("affinity")
    after = doc["state"]["after"]
    if after is None and affinity:
        after = doc["state"]["after"] = state.snapshot(affinity, probes.sysfs_root())
    if after is not None:
        doc["env"]["temp_c_after"] = after["temp_c"]
        doc["env"]["freq_mhz_after"] = state.freq_of(after) or probes.freq_mhz()
    else:
        doc["env"]["temp_c_after"], doc["env"]["freq_mhz_after"] = probes.temperature_c(), probes.freq_mhz()
    peaks = [p for p in (_PEAK_BEFORE_RESET_KB.get("kb"), _peak_kb(doc)) if p is not None]
    doc["memory"]["peak_rss_kb"] = max(peaks) if peaks else None


def _peak_kb(doc: dict) -> int | None:
    """VmHWM now, and never below an RSS this job already read: after the peak was reset through
    clear_refs the kernel updates its high-water mark lazily, so memory freed since can hide from it."""
    seen = [v for v in (probes.memory_kb()["peak_kb"], doc["memory"].get("rss_after_init_kb")) if v is not None]
    return max(seen) if seen else None


def _load(spec: JobSpec, runtime: runtimes.LoadedRuntime, custom_ops: list, doc: dict, external: list) -> dict:
    """Construct and resize the interpreter, prepare the inputs, reset the peak RSS, allocate. Fills
    ``memory`` and returns ``interpreter``, ``samples``, ``init_ns`` (construct + allocate) and
    ``baseline_kb`` (RSS when the peak was reset; None when it could not be)."""
    from agent import inputs as inputs_mod
    from agent import tensors

    doc["memory"]["rss_before_load_kb"] = probes.memory_kb()["rss_kb"]
    t0 = time.perf_counter_ns()
    try:
        interpreter = runtime.interpreter(str(spec.model), spec.threads, spec.xnnpack, external)
    except JobFailed:
        raise
    except Exception as exc:  # the runtime's own exception types vary (ValueError, RuntimeError ...)
        raise classify(exc, "loading the model", runtime, custom_ops, spec.delegate) from exc
    construct_ns = time.perf_counter_ns() - t0
    external_nodes = delegation.delegate_nodes(interpreter)  # before XNNPACK joins at allocate
    constructed_kb = _growth(doc["memory"]["rss_before_load_kb"], probes.memory_kb()["rss_kb"])
    details = interpreter.get_input_details()
    by_name = {d["name"]: d for d in details}
    unknown = sorted(set(spec.input_shapes) - set(by_name))
    if unknown:
        raise JobFailed("bad_inputs", f"--input-shape names {unknown}, but the model's inputs are "
                        f"{sorted(by_name)}")
    for name, shape in spec.input_shapes.items():
        try:
            interpreter.resize_tensor_input(by_name[name]["index"], [int(d) for d in shape], strict=True)
        except Exception as exc:
            raise JobFailed("bad_inputs", f"cannot resize input {name!r} (signature "
                            f"{list(by_name[name]['shape_signature'])}) to {list(shape)}: {exc}") from exc
    dynamic = [d for d in details if d["name"] not in spec.input_shapes and -1 in list(d["shape_signature"])]
    # Inputs are prepared before the tensors are allocated and the peak is reset in between: the model's
    # peak (arena, packed weights, inference) is then measured apart from the input data's transients.
    in_ios = [tensors.describe(d) for d in interpreter.get_input_details()]
    if spec.inputs:
        samples = inputs_mod.load_samples(spec.inputs, in_ios)
    else:
        samples = inputs_mod.random_samples(in_ios, spec.seed)
        if any(tensors.is_quantized(io) for io in in_ios):
            doc["warnings"].append(f"random inputs (seed {spec.seed}) for a quantized model: the latency "
                                   "holds, the outputs mean nothing; give --inputs for outputs to compare")
    doc["inputs"] = {"source": samples.source, "count": samples.count}
    _PEAK_BEFORE_RESET_KB["kb"] = probes.memory_kb()["peak_kb"]
    baseline = probes.reset_peak()
    doc["memory"]["model_baseline_kb"] = baseline
    t1 = time.perf_counter_ns()
    try:
        interpreter.allocate_tensors()
    except Exception as exc:
        if dynamic:
            names = ", ".join(f"{d['name']} {list(d['shape_signature'])}" for d in dynamic)
            example = ",".join("<n>" if x < 0 else str(x) for x in dynamic[0]["shape_signature"])
            raise JobFailed("dynamic_shape", f"cannot allocate tensors with the default shape of dynamic "
                            f"input(s) {names}; give the shape to measure, e.g. --input-shape "
                            f"{dynamic[0]['name']}={example} (job key input_shapes) "
                            f"(runtime said: {first_line(exc)})") from exc
        raise classify(exc, "allocating tensors", runtime, custom_ops, spec.delegate) from exc
    init_ns = construct_ns + time.perf_counter_ns() - t1
    doc["memory"]["rss_after_init_kb"] = probes.memory_kb()["rss_kb"]
    for d in dynamic:
        doc["warnings"].append(f"input {d['name']!r} has dynamic shape {list(d['shape_signature'])}: ran "
                               f"with the default {list(d['shape'])}; give --input-shape to choose")
    return {"interpreter": interpreter, "samples": samples, "init_ns": init_ns, "baseline_kb": baseline,
            "constructed_kb": constructed_kb, "external_nodes": external_nodes}


def _growth(before: int | None, after: int | None) -> int:
    return max(0, after - before) if before is not None and after is not None else 0


def _set_inputs(interpreter: Any, ios: list, values: list) -> None:
    for io, value in zip(ios, values):
        interpreter.set_tensor(io["index"], value)


def _guard(fn: Callable[[], Any], what: str, runtime: runtimes.LoadedRuntime) -> Any:
    try:
        return fn()
    except Exception as exc:
        raise classify(exc, what, runtime, []) from exc


def _save_outputs(path: str, interpreter: Any, in_ios: list, out_ios: list, samples: Any,
                  runtime: runtimes.LoadedRuntime) -> str:
    """Run every sample, write ``<name>`` (dequantized) and ``raw/<name>`` per output to ``path``."""
    import numpy as np

    from agent import tensors

    per_output: list = [[] for _ in out_ios]
    for i in range(samples.count):
        _set_inputs(interpreter, in_ios, samples.sample(i))
        _guard(interpreter.invoke, f"inference of sample {i}", runtime)
        for j, io in enumerate(out_ios):
            per_output[j].append(interpreter.get_tensor(io["index"]).copy())
    arrays = {}
    for io, values in zip(out_ios, per_output):
        raw = np.stack(values) if samples.stacked else values[0]
        arrays[io["name"]] = tensors.real_values(raw, io)
        arrays[f"raw/{io['name']}"] = raw
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.npz")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()  # never leave a half-written file behind
        if disk_full.is_disk_full(exc):
            raise JobFailed("disk_full", disk_full.message(target, exc, "writing the outputs to")) from exc
        raise JobFailed("bad_inputs", f"cannot write outputs to {path}: {exc}; give a writable path") from exc
    return str(target)


def _test_fault() -> None:
    fault = os.environ.get(FAULT_ENV)
    if not fault:
        return
    sys.stderr.write(f"edgebench worker: test fault {fault!r} injected\n")
    sys.stderr.flush()
    if fault == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "hang":
        time.sleep(24 * 3600)  # the runner's deadline ends this
    elif fault == "exit":
        os._exit(3)


def _add_environment_warnings(doc: dict) -> None:
    env = doc["env"]
    before, after = env.get("temp_c_before"), env.get("temp_c_after")
    if before is not None and after is not None and after - before >= THROTTLE_RISE_C:
        doc["warnings"].append(f"temperature rose {after - before:.0f} C during the job ({before:.0f} -> "
                               f"{after:.0f} C): suspect thermal throttling; add --cooldown between jobs")
