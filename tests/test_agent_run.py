"""Real jobs in real worker processes, on real models, with both installed runtimes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent import schema
from agent.job import JobSpec
from agent.runner import RunnerOptions, run_job
from agent.tensors import dequantize, quantize

RUNTIMES = ("ai-edge-litert", "tflite-runtime")
GOOD = ("float32", "int8_io", "uint8_io", "fp16", "dynamic_conv", "dynamic_fc", "two_inputs", "two_outputs",
        "dynamic_batch", "int_inputs", "bench_tiny", "bench_medium")
EXPECTED_IO = {  # model -> (input dtypes, output dtypes)
    "float32": (["float32"], ["float32"]),
    "int8_io": (["int8"], ["int8"]),
    "uint8_io": (["uint8"], ["uint8"]),
    "fp16": (["float32"], ["float32"]),
    "two_inputs": (["float32", "float32"], ["float32"]),
    "two_outputs": (["float32"], ["float32", "float32"]),
    "int_inputs": (sorted(["int32", "int64", "int16", "bool"]), ["float32"]),
}


def quick(model, **kw) -> JobSpec:
    """A job that measures briefly: the tests check documents, not speed."""
    settings = {"runs": 5, "min_seconds": 0.02, "warmup": 1, "warmup_min_seconds": 0.0, "timeout": 60}
    settings.update(kw)
    return JobSpec(model=str(model), **settings)


def interpreter(runtime, path):
    if runtime == "tflite-runtime":
        from tflite_runtime.interpreter import Interpreter
    else:
        from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    return it


# every good model on both runtimes, except the FULLY_CONNECTED v12 model on tflite-runtime 2.14 (see
# test_too_new_op_version_is_a_clear_error_on_tflite_runtime)
LOADABLE = [(name, rt) for name in GOOD for rt in RUNTIMES if (name, rt) != ("dynamic_fc", "tflite-runtime")]


@pytest.mark.parametrize("name,runtime", LOADABLE)
def test_every_good_model_gives_a_complete_ok_document(test_models, name, runtime):
    doc = run_job(quick(test_models[name], runtime=runtime, threads=2, meta={"variant": name}))
    assert doc["status"] == "ok", doc["error"]
    assert doc["error"] is None
    assert set(schema.TOP_LEVEL_KEYS) <= set(doc)
    assert doc["schema_version"] == schema.SCHEMA_VERSION == 2
    assert doc["job"]["meta"] == {"variant": name} and doc["job"]["threads"] == 2
    assert doc["runtime"]["name"] == runtime and doc["runtime"]["num_threads"] == 2
    assert doc["runtime"]["version"] == ("2.3.0" if runtime == "ai-edge-litert" else "2.14.0")
    assert doc["runtime"]["delegates"] in (["XNNPACK"], [])
    assert doc["model"]["bytes"] == test_models[name].stat().st_size
    assert len(doc["model"]["sha256"]) == 64
    timing = doc["timing"]
    assert set(schema.TIMING_KEYS) <= set(timing)
    assert timing["count"] == len(timing["samples_us"]) >= 5
    assert timing["min_ms"] <= timing["p50_ms"] <= timing["p90_ms"] <= timing["p99_ms"] <= timing["max_ms"]
    assert timing["init_ms"] > 0 and timing["first_inference_ms"] > 0
    assert timing["warmup_count"] >= 1
    assert abs(np.mean(timing["samples_us"]) / 1000 - timing["mean_ms"]) < 0.001 + 0.01 * timing["mean_ms"]
    assert timing["process_count"] == 1 and timing["between_process_cv"] is None
    memory = doc["memory"]
    assert 0 < memory["rss_before_load_kb"] <= memory["peak_rss_kb"]
    assert memory["rss_after_init_kb"] <= memory["peak_rss_kb"]
    assert 0 <= memory["model_peak_kb"] < memory["peak_rss_kb"]
    # (the kernel syncs per-thread RSS counters lazily: readings may disagree by a few pages)
    assert memory["model_peak_kb"] <= memory["peak_rss_kb"] - memory["rss_before_load_kb"] + 256
    assert memory["rss_before_load_kb"] < memory["model_baseline_kb"] <= memory["peak_rss_kb"] + 256
    env = doc["env"]
    assert env["cpu_count"] == os.cpu_count() and env["arch"] and env["python"]
    assert env["affinity"] == sorted(os.sched_getaffinity(0)) and env["cluster"] == "all"
    assert [p["pid"] for p in doc["processes"]] == [doc["worker"]["pid"]]
    assert doc["processes"][0]["p50_ms"] == timing["p50_ms"]
    assert set(doc["flags"]) <= {"noisy", "throttled", "partial"}
    assert ("noisy" in doc["flags"]) == timing["noisy"]
    assert doc["canary"]["before_us"] > 0 and doc["canary"]["after_us"] > 0
    assert doc["state"]["before"]["cpus"][0]["cpu"] == env["affinity"][0]
    delegation = doc["runtime"]["delegation"]
    assert delegation["ops_delegated"] + delegation["ops_on_cpu"] == delegation["ops"] > 0
    assert (delegation["delegate_nodes"] > 0) == (doc["runtime"]["delegates"] == ["XNNPACK"])
    assert doc["energy"]["mj_per_inference"] is None and "no energy sensor" in doc["energy"]["reason"]
    assert env["mem_total_kb"] > 0 and len(env["loadavg"]) == 3
    if name in EXPECTED_IO:
        ins, outs = EXPECTED_IO[name]
        assert sorted(i["dtype"] for i in doc["model"]["inputs"]) == sorted(ins)
        assert [o["dtype"] for o in doc["model"]["outputs"]] == outs
    quantized = {"int8_io", "uint8_io"}
    for entry in doc["model"]["inputs"] + doc["model"]["outputs"]:
        assert (entry["scale"] is not None) == (name in quantized)
    json.dumps(doc, allow_nan=False)  # what crosses the wire is plain JSON


def test_xnnpack_off_is_recorded_and_applied(test_models):
    on = run_job(quick(test_models["float32"]))
    off = run_job(quick(test_models["float32"], xnnpack=False))
    assert on["runtime"]["delegates"] == ["XNNPACK"] and on["runtime"]["xnnpack_requested"] is True
    assert off["runtime"]["delegates"] == [] and off["runtime"]["xnnpack_requested"] is False
    assert off["status"] == "ok"


def test_the_tensorflow_runtime_is_discovered_and_recorded(test_models):
    doc = run_job(quick(test_models["two_inputs"], runtime="tensorflow"))
    assert doc["status"] == "ok", doc["error"]
    assert doc["runtime"]["name"] == "tensorflow" and doc["runtime"]["version"] == "2.21.0"


def test_auto_prefers_ai_edge_litert(test_models):
    assert run_job(quick(test_models["float32"]))["runtime"]["name"] == "ai-edge-litert"


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", ["bad_not_flatbuffer", "bad_truncated", "bad_custom_op", "bad_flex_op"])
def test_bad_models_give_a_clear_error_document(test_models, name, runtime):
    from tests.modelgen import BAD_MODELS

    doc = run_job(quick(test_models[name], runtime=runtime))
    assert doc["status"] == "error"
    assert doc["error"]["kind"] == BAD_MODELS[name]
    message = doc["error"]["message"]
    hints = {"not_a_model": ".tflite", "unresolved_op": "Cumprod", "flex_op": "TFLITE_BUILTINS"}
    assert hints[BAD_MODELS[name]] in message
    assert doc["model"]["sha256"] and doc["timing"]["p50_ms"] is None
    assert set(schema.TOP_LEVEL_KEYS) <= set(doc)


def test_too_new_op_version_is_a_clear_error_on_tflite_runtime(test_models):
    doc = run_job(quick(test_models["dynamic_fc"], runtime="tflite-runtime"))
    assert doc["status"] == "error" and doc["error"]["kind"] == "unsupported_op"
    assert "FULLY_CONNECTED version 12" in doc["error"]["message"]
    assert "2.14.0" in doc["error"]["message"] and "ai-edge-litert" in doc["error"]["message"]


def test_a_missing_model_file_is_an_error_document(tmp_path):
    doc = run_job(quick(tmp_path / "gone.tflite"))
    assert doc["status"] == "error" and doc["error"]["kind"] == "missing_model"
    assert "gone.tflite" in doc["error"]["message"]


# ---- dynamic shapes ----------------------------------------------------------------------------

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_dynamic_length_needs_a_shape_then_runs_with_it(test_models, runtime):
    bad = run_job(quick(test_models["dynamic_length"], runtime=runtime))
    assert bad["status"] == "error" and bad["error"]["kind"] == "dynamic_shape"
    assert "--input-shape seq=1,<n>,4" in bad["error"]["message"]
    good = run_job(quick(test_models["dynamic_length"], runtime=runtime, input_shapes={"seq": [1, 12, 4]}))
    assert good["status"] == "ok", good["error"]
    (seq,) = good["model"]["inputs"]
    assert seq["shape"] == [1, 12, 4] and seq["shape_signature"] == [1, -1, 4]


def test_a_dynamic_batch_is_resized_and_warned_about_when_not(test_models):
    default = run_job(quick(test_models["dynamic_batch"]))
    assert default["model"]["inputs"][0]["shape"] == [1, 16]
    assert any("dynamic shape" in w for w in default["warnings"])
    batch4 = run_job(quick(test_models["dynamic_batch"], input_shapes={"x": [4, 16]}))
    assert batch4["model"]["inputs"][0]["shape"] == [4, 16]
    assert batch4["model"]["outputs"][0]["shape"] == [4, 4]
    assert not any("dynamic shape" in w for w in batch4["warnings"])


def test_an_unknown_input_shape_name_is_a_bad_inputs_error(test_models):
    doc = run_job(quick(test_models["dynamic_batch"], input_shapes={"nope": [2, 16]}))
    assert doc["error"]["kind"] == "bad_inputs" and "'x'" in doc["error"]["message"]


# ---- inputs and outputs ----------------------------------------------------------------------------

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_saved_outputs_of_float_data_on_an_int8_model_match_the_runtime(test_models, tmp_path, runtime):
    x = np.random.default_rng(1).uniform(0, 1, size=(3, 8, 8, 1)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x, y=np.arange(3))
    out = tmp_path / "out" / "outputs.npz"
    doc = run_job(quick(test_models["int8_io"], runtime=runtime, inputs=str(tmp_path / "eval.npz"),
                        save_outputs=str(out)))
    assert doc["status"] == "ok", doc["error"]
    assert doc["outputs_file"] == str(out) and doc["inputs"] == {"source": str(tmp_path / "eval.npz"), "count": 3}
    (inp,), (outp,) = doc["model"]["inputs"], doc["model"]["outputs"]
    saved = np.load(out)
    assert sorted(saved.files) == sorted([outp["name"], f"raw/{outp['name']}"])
    raw = saved[f"raw/{outp['name']}"]
    assert raw.dtype == np.int8 and raw.shape == (3, 1, 10)
    assert np.array_equal(saved[outp["name"]], dequantize(raw, outp["scale"], outp["zero_point"]))
    # the same inference, done here by hand: quantize, invoke, compare bit for bit
    it = interpreter(runtime, test_models["int8_io"])
    for i in range(3):
        it.set_tensor(inp["index"], quantize(x[i][None], inp["scale"], inp["zero_point"], np.int8))
        it.invoke()
        assert np.array_equal(it.get_tensor(outp["index"]), raw[i])
    probs = saved[outp["name"]]
    assert np.allclose(probs.sum(axis=-1), 1.0, atol=0.05)  # dequantized softmax: real probabilities


def test_two_inputs_by_name_and_two_outputs_saved(test_models, tmp_path):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(1, 4)).astype(np.float32), rng.normal(size=(1, 6)).astype(np.float32)
    np.savez(tmp_path / "in.npz", b=b, a=a)
    doc = run_job(quick(test_models["two_inputs"], inputs=str(tmp_path / "in.npz"),
                        save_outputs=str(tmp_path / "o.npz")))
    assert doc["status"] == "ok", doc["error"]
    it = interpreter("ai-edge-litert", test_models["two_inputs"])
    for d in it.get_input_details():
        it.set_tensor(d["index"], {"a": a, "b": b}[d["name"]])
    it.invoke()
    (out,) = it.get_output_details()
    saved = np.load(tmp_path / "o.npz")
    assert saved[out["name"]].shape == (1, 3)  # a single sample: not stacked
    assert np.array_equal(saved[out["name"]], it.get_tensor(out["index"]))

    doc2 = run_job(quick(test_models["two_outputs"], save_outputs=str(tmp_path / "o2.npz")))
    names = [o["name"] for o in doc2["model"]["outputs"]]
    saved2 = np.load(tmp_path / "o2.npz")
    assert sorted(saved2.files) == sorted(names + [f"raw/{n}" for n in names])
    assert sorted(saved2[n].shape for n in names) == [(1, 3), (1, 5)]


def test_random_inputs_are_seeded_per_job(test_models, tmp_path):
    outs = []
    for seed in (5, 5, 6):
        path = tmp_path / f"o{len(outs)}.npz"
        doc = run_job(quick(test_models["int_inputs"], seed=seed, save_outputs=str(path)))
        assert doc["inputs"]["source"] == f"random(seed={seed})"
        outs.append(np.load(path)[doc["model"]["outputs"][0]["name"]])
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])


def test_random_inputs_on_a_quantized_model_are_warned_about(test_models):
    doc = run_job(quick(test_models["uint8_io"]))
    assert any("random inputs" in w for w in doc["warnings"])


def test_bad_inputs_file_gives_bad_inputs(test_models, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 5), np.float32))
    doc = run_job(quick(test_models["two_inputs"], inputs=str(tmp_path / "x.npy")))
    assert doc["status"] == "error" and doc["error"]["kind"] == "bad_inputs"
    assert "'a'" in doc["error"]["message"] and "'b'" in doc["error"]["message"]


# ---- isolation: crash, hang, silent exit --------------------------------------------------------

def fault(kind):
    return RunnerOptions(extra_env={"EDGEBENCH_AGENT_TEST_FAULT": kind})


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_worker_killed_by_a_signal_is_crashed_with_signal_and_stderr(test_models):
    doc = run_job(quick(test_models["float32"]), fault("segv"))
    assert doc["status"] == "crashed"
    assert doc["error"]["kind"] == "signal" and "SIGSEGV" in doc["error"]["message"]
    assert "test fault 'segv'" in doc["error"]["stderr_tail"]
    # the checkpoint taken after loading survives the crash
    assert doc["model"]["inputs"][0]["name"] == "image" and doc["runtime"]["name"] == "ai-edge-litert"
    assert gone(doc["worker"]["pid"])


def test_a_real_runtime_segfault_is_crashed_and_the_precheck_prevents_it(test_models):
    # tflite-runtime 2.14 reads past the end of a truncated flatbuffer. That is undefined behaviour:
    # almost always a SIGSEGV, rarely a garbage error. Whatever it does, the agent returns a document.
    skip_check = RunnerOptions(extra_env={"EDGEBENCH_AGENT_TEST_SKIP_PRECHECK": "1"})
    crashes = []
    for _attempt in range(3):
        doc = run_job(quick(test_models["bad_truncated"], runtime="tflite-runtime"), skip_check)
        assert doc["status"] in ("crashed", "error"), doc["error"]
        assert doc["runtime"]["name"] == "tflite-runtime" and doc["model"]["sha256"]
        if doc["status"] == "crashed":
            crashes.append(doc)
            break
    (crash,) = crashes
    assert crash["error"]["kind"] == "signal" and "SIGSEGV" in crash["error"]["message"]
    assert "while loading the model" in crash["error"]["message"]
    # with the pre-check (the default) the same file is always a clear error instead
    checked = run_job(quick(test_models["bad_truncated"], runtime="tflite-runtime"))
    assert checked["status"] == "error" and checked["error"]["kind"] == "not_a_model"


def test_a_hung_worker_is_killed_at_its_deadline(test_models):
    t0 = time.monotonic()
    doc = run_job(quick(test_models["float32"], timeout=4), fault("hang"))
    elapsed = time.monotonic() - t0
    assert doc["status"] == "timeout" and doc["error"]["kind"] == "timeout"
    assert "4 s" in doc["error"]["message"]
    assert 4 <= elapsed < 30
    assert gone(doc["worker"]["pid"])


def test_a_worker_that_exits_without_a_document_is_worker_failed(test_models):
    doc = run_job(quick(test_models["float32"]), fault("exit"))
    assert doc["status"] == "error" and doc["error"]["kind"] == "worker_failed"
    assert "code 3" in doc["error"]["message"]


def test_measuring_longer_than_the_timeout_is_a_timeout(test_models):
    doc = run_job(quick(test_models["bench_medium"], runs=10**9, min_seconds=300, max_seconds=300, timeout=3))
    assert doc["status"] == "timeout"
    assert doc["model"]["sha256"] and doc["runtime"]["version"] == "2.3.0"


# ---- the agent is light ----------------------------------------------------------------------------

def bare_runtime_modules(python, runtime_module):
    code = (f"import sys, numpy, {runtime_module}; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    return set(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                              timeout=120).stdout.split())


@pytest.mark.parametrize("runtime,module", [("ai-edge-litert", "ai_edge_litert.interpreter"),
                                            ("tflite-runtime", "tflite_runtime.interpreter")])
def test_the_worker_imports_only_stdlib_numpy_and_the_runtime(test_models, tmp_path, runtime, module):
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 8, 8, 1), np.float32))
    options = RunnerOptions(extra_env={"EDGEBENCH_AGENT_DEBUG_MODULES": "1"})
    doc = run_job(quick(test_models["int8_io"], runtime=runtime, inputs=str(tmp_path / "x.npz"),
                        save_outputs=str(tmp_path / "o.npz")), options)
    assert doc["status"] == "ok", doc["error"]
    modules = set(doc["debug"]["modules"])
    allowed = set(sys.stdlib_module_names) | {"agent", "psutil"} | bare_runtime_modules(sys.executable, module)
    assert {"numpy", "agent", module.split(".")[0]} <= modules
    assert modules - allowed == set()


@pytest.mark.parametrize("argv", [["--help"], ["info", "--json"], ["run", "--help"],
                                  ["run", "MODEL", "--runs", "2", "--min-seconds", "0", "--json"]])
def test_the_agent_process_itself_never_imports_numpy(argv, test_models):
    argv = [str(test_models["int8_io"]) if a == "MODEL" else a for a in argv]
    code = ("import sys, io, contextlib; from agent.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(sys.argv[1:])\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    assert "agent" in out
    assert not {"numpy", "ai_edge_litert", "tflite_runtime", "tensorflow"} & set(out)


def test_every_stdlib_side_module_imports_on_a_bare_python_without_site_packages():
    """-I -S: no site-packages at all, so any import beyond the standard library fails here. Only
    agent.tensors and agent.inputs (numpy) are left out; they load in the worker after the runtime."""
    import agent
    from agent.runner import agent_root

    modules = sorted(p.stem for p in Path(agent.__file__).parent.glob("*.py")
                     if p.stem not in ("__main__", "tensors", "inputs"))
    code = (f"import sys; sys.path.insert(0, {agent_root()!r}); "
            + "; ".join(f"import agent.{m}" for m in modules if m != "__init__")
            + "; print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'psutil')))")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert len(modules) >= 15
