"""Per-op profile: single-op models cut from real .tflite files, timed by real runtimes on real inputs.

The sum of the per-op p50s is held to ``RATIO_BAND`` of the whole model's p50 on models whose ops take
microseconds to hundreds of microseconds (a 2-core shared box is noisy: the band is loose on purpose);
the measured ratios are printed (``pytest -s`` / ``-rP``).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from agent.errors import UsageError
from agent.job import JobSpec
from agent.runner import RunnerOptions, run_job
from controller.cli import main
from controller.errors import InputError
from controller.fleet.profile_view import RATIO_BAND, summarize
from controller.model.op_cut import cut_ops
from controller.model.reader import read_model
from tests.fixtures_fleet import DEVICE_PYTHON, device_entry, write_inventory

RUNTIMES = ("ai-edge-litert", "tflite-runtime")
QUICK = {"runs": 20, "min_seconds": 0.3, "warmup": 3, "warmup_min_seconds": 0.05, "timeout": 120}


def plan_for(model: Path, folder: Path, **settings) -> dict:
    return {"ops": [c.plan_entry() for c in cut_ops(model, folder)], **settings}


def profiled(model: Path, folder: Path, options: RunnerOptions | None = None, **job) -> dict:
    spec = JobSpec(model=str(model), profile=plan_for(model, folder), **{**QUICK, **job})
    doc = run_job(spec, options)
    assert doc["status"] == "ok", doc["error"]
    return doc


# ---- cutting ---------------------------------------------------------------------------------------

def test_every_op_becomes_a_model_fed_by_the_tensors_that_feed_it(test_models, tmp_path):
    info = read_model(test_models["float32"])
    cuts = cut_ops(test_models["float32"], tmp_path)
    assert [c.op for c in cuts] == [o.name for o in info.operators]
    assert [c.index for c in cuts] == list(range(len(info.operators)))
    for cut, op in zip(cuts, info.operators):
        constants = {t.index for t in info.tensors if t.constant}
        assert list(cut.inputs) == [t for t in op.inputs if t >= 0 and t not in constants]
        alone = read_model(cut.file)
        assert [o.name for o in alone.operators] == [op.name]
        assert [t.shape for t in alone.inputs] == [info.tensors[t].shape for t in cut.inputs]
        assert [t.shape for t in alone.outputs] == [info.tensors[t].shape for t in op.outputs]
        assert alone.bytes == cut.bytes < info.bytes  # only its own weights travel
    assert cuts[0].inputs == (info.inputs[0].index,)
    assert cuts[1].inputs == tuple(info.operators[0].outputs)  # fed by the previous op's output


def test_weights_made_from_constants_travel_with_their_consumer(test_models, tmp_path):
    """fp16 weights are DEQUANTIZE outputs: the conv's cut keeps them constant-made, as the delegate
    sees them in the whole model, instead of feeding them as inputs."""
    cuts = {c.index: c for c in cut_ops(test_models["fp16"], tmp_path)}
    conv = next(c for c in cuts.values() if c.op == "CONV_2D")
    assert [o.name for o in read_model(conv.file).operators] == ["DEQUANTIZE", "DEQUANTIZE", "CONV_2D"]
    assert len(conv.inputs) == 1
    assert all(c.inputs == () for c in cuts.values() if c.op == "DEQUANTIZE")


def test_a_file_that_is_not_a_model_is_refused_naming_it(test_models, tmp_path):
    with pytest.raises(InputError, match="bad_not_flatbuffer"):
        cut_ops(test_models["bad_not_flatbuffer"], tmp_path)


def test_a_bad_plan_is_a_usage_error():
    with pytest.raises(UsageError, match="non-empty list 'ops'"):
        JobSpec.from_dict({"model": "m.tflite", "profile": {"ops": []}})
    with pytest.raises(UsageError, match="unknown profile key"):
        JobSpec.from_dict({"model": "m.tflite", "profile": {"ops": [{"index": 0, "skipped": "x"}], "rnus": 3}})
    with pytest.raises(UsageError, match="needs a 'file'"):
        JobSpec.from_dict({"model": "m.tflite", "profile": {"ops": [{"index": 0, "op": "ADD"}]}})


# ---- timing on the device --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ops_xnnpack_rejects_are_timed_on_the_cpu_and_the_sum_matches_the_model(test_models, tmp_path,
                                                                               runtime):
    doc = profiled(test_models["cpu_fallback"], tmp_path, runtime=runtime)
    profile = doc["profile"]
    ops = {o["op"]: o for o in profile["ops"]}
    where = {o["index"]: (o["op"], o["delegated"]) for o in profile["ops"]}
    assert where == {0: ("CONV_2D", True), 1: ("LOCAL_RESPONSE_NORMALIZATION", False), 2: ("CONV_2D", True),
                     3: ("CUMSUM", False), 4: ("MEAN", True)}
    assert profile["delegate_nodes"] == 3  # conv, conv, mean: the CPU ops split the graph
    for o in profile["ops"]:
        assert o["error"] is None and o["us"] > 0 and o["count"] >= QUICK["runs"] // 2
        assert o["xnnpack"] is o["delegated"]  # each op alone runs on the kernel it runs on in the model
    assert ops["LOCAL_RESPONSE_NORMALIZATION"]["us"] > ops["MEAN"]["us"]
    ratio = profile["ratio"]
    print(f"cpu_fallback {runtime}: sum {profile['sum_us']:.1f} us / model p50 {profile['model_p50_us']:.1f} us "
          f"= {ratio:.2f}")
    assert profile["sum_us"] == pytest.approx(sum(o["us"] for o in profile["ops"]))
    assert RATIO_BAND[0] <= ratio <= RATIO_BAND[1]


@pytest.mark.slow
def test_ops_are_fed_the_real_intermediates(test_models, tmp_path):
    """int_inputs gathers rows 0..9 of a table with ids clipped by MINIMUM/MAXIMUM; the agent's random ids
    run to 100, so a GATHER fed anything but the clipped tensor would fail out of range. CAST, GATHER and
    the int32 MINIMUM/MAXIMUM stay on the CPU; the float math goes to XNNPACK."""
    profile = profiled(test_models["int_inputs"], tmp_path)["profile"]
    assert [o["error"] for o in profile["ops"]] == [None] * len(profile["ops"])
    on_cpu = sorted({o["op"] for o in profile["ops"] if o["delegated"] is False})
    assert on_cpu == ["CAST", "GATHER", "MAXIMUM", "MINIMUM"]
    assert {o["op"] for o in profile["ops"] if o["delegated"]} == {"ADD", "MUL", "SUM"}


@pytest.mark.slow
def test_one_op_that_cannot_run_is_an_entry_with_its_error(test_models, tmp_path):
    plan = plan_for(test_models["bench_tiny"], tmp_path / "cuts")
    broken = tmp_path / "broken.tflite"
    shutil.copy(test_models["bad_not_flatbuffer"], broken)
    plan["ops"][0]["file"] = str(broken)
    plan["ops"].append({"index": 99, "op": "WHILE", "file": None, "inputs": [], "skipped": "calls subgraphs"})
    doc = run_job(JobSpec(model=str(test_models["bench_tiny"]), profile=plan, **QUICK))
    assert doc["status"] == "ok", doc["error"]
    first, relu_or_none, skipped = doc["profile"]["ops"][0], doc["profile"]["ops"][1:-1], doc["profile"]["ops"][-1]
    assert first["us"] is None and first["error"]
    assert all(o["error"] is None and o["us"] > 0 for o in relu_or_none)
    assert skipped["us"] is None and skipped["skipped"] == "calls subgraphs"
    assert doc["profile"]["sum_us"] == pytest.approx(sum(o["us"] for o in relu_or_none))


@pytest.mark.slow
def test_the_profiling_worker_imports_only_stdlib_numpy_and_the_runtime(test_models, tmp_path):
    from tests.test_agent_run import bare_runtime_modules

    options = RunnerOptions(extra_env={"EDGEBENCH_AGENT_DEBUG_MODULES": "1"})
    doc = profiled(test_models["fp16"], tmp_path, options)
    modules = set(doc["debug"]["modules"])
    allowed = set(sys.stdlib_module_names) | {"agent", "psutil"} | bare_runtime_modules(
        sys.executable, "ai_edge_litert.interpreter")
    assert modules - allowed == set()


# ---- the command -----------------------------------------------------------------------------------

def profile_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["profile", *argv, "--json", "--runs", "20", "--min-seconds", "0.3"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_profile_of_a_conv_model_as_json(test_models, capsys):
    code, doc = profile_json(capsys, str(test_models["bench_medium"]))
    assert code == 0
    assert [(o["index"], o["op"]) for o in doc["ops"]] == [(0, "CONV_2D"), (1, "CONV_2D"), (2, "CONV_2D"),
                                                           (3, "MEAN")]
    assert sum(o["share"] for o in doc["ops"]) == pytest.approx(1.0)
    assert doc["sum_us"] == pytest.approx(sum(o["us"] for o in doc["ops"]))
    convs = [o["us"] for o in doc["ops"] if o["op"] == "CONV_2D"]
    assert min(convs[1:]) > convs[0]  # 32->32 channel convs cost more than the 8->32 one
    assert doc["by_type"][0]["op"] == "CONV_2D" and doc["by_type"][0]["count"] == 3
    assert doc["delegated_ops"] == 4 and doc["cpu_ops"] == 0
    print(f"bench_medium: sum {doc['sum_us']:.1f} us / model p50 {doc['model_p50_us']:.1f} us = {doc['ratio']:.2f}")
    assert RATIO_BAND[0] <= doc["ratio"] <= RATIO_BAND[1] and doc["in_band"] is True


@pytest.mark.slow
def test_without_xnnpack_every_op_runs_on_the_cpu(test_models, capsys):
    code, doc = profile_json(capsys, str(test_models["cpu_fallback"]), "--no-xnnpack")
    assert code == 0
    assert [o["delegated"] for o in doc["ops"]] == [False] * 5
    assert [o["xnnpack"] for o in doc["ops"]] == [False] * 5
    assert doc["delegates"] == []


@pytest.mark.slow
def test_several_variants_get_a_table_per_op_type_and_variant(test_models, capsys):
    code = main(["profile", str(test_models["float32"]), str(test_models["int8_io"]), "--runs", "5",
                 "--min-seconds", "0.1", "--op-runs", "5", "--op-min-seconds", "0.01"])
    out = capsys.readouterr().out
    assert code == 0
    assert "µs per op type and variant" in out and "float32" in out and "int8_io" in out
    assert out.count("sum of op times") == 2 and "FULLY_CONNECTED" in out


def test_a_missing_model_is_a_usage_error(tmp_path, capsys):
    assert main(["profile", str(tmp_path / "nope.tflite")]) == 2
    assert "nope.tflite" in capsys.readouterr().err


@pytest.mark.slow
def test_profile_on_an_ssh_device_pushes_the_cuts_once(ssh_fleet, test_models, tmp_path, capsys):
    workdir = tmp_path / "board-0 profile work"  # its own: the fleet's workdirs belong to test_run
    inventory = write_inventory(tmp_path / "devices.yaml", [dict(ssh_fleet.entries[0], workdir=str(workdir))])
    model = str(test_models["cpu_fallback"])
    code, doc = profile_json(capsys, model, "--device", "board-0", "--devices", str(inventory))
    assert code == 0, doc.get("error")
    assert doc["device"] == "board-0" and doc["runtime"] == "ai-edge-litert"
    assert [o["delegated"] for o in doc["ops"]] == [True, False, True, False, True]
    assert RATIO_BAND[0] <= doc["ratio"] <= RATIO_BAND[1]
    def cached() -> dict:
        return {p.name: p.stat().st_mtime_ns for p in (workdir / "models").glob("*.tflite")}

    first = cached()
    assert len(first) >= 6  # the model and its five single-op models, content-addressed
    code, again = profile_json(capsys, model, "--device", "board-0", "--devices", str(inventory))
    assert code == 0 and cached() == first  # nothing sent again
    print(f"cpu_fallback over SSH: ratios {doc['ratio']:.2f}, {again['ratio']:.2f}")


def test_an_unreachable_device_exits_3(ssh_fleet, sshd_factory, test_models, tmp_path, capsys):
    gone = sshd_factory.start("gone-profile")
    inventory = write_inventory(tmp_path / "devices.yaml", [
        device_entry(gone, ssh_fleet.key, ssh_fleet.known_hosts, tmp_path / "w", connect_timeout=3)])
    gone.stop()
    code = main(["profile", str(test_models["float32"]), "--device", "gone-profile", "--devices", str(inventory)])
    assert code == 3
    assert "gone-profile" in capsys.readouterr().err


def test_summary_of_a_failed_job_has_no_ops(test_models):
    doc = run_job(JobSpec(model=str(test_models["bad_custom_op"]), timeout=60,
                          profile={"ops": [{"index": 0, "op": "X", "file": "x", "inputs": []}]}))
    summary = summarize(doc)
    assert summary["status"] == "error" and summary["ops"] == [] and summary["ratio"] is None


@pytest.mark.slow
def test_run_with_profile_adds_per_op_profiles_to_the_run_folder(ssh_fleet, test_models, tmp_path, capsys):
    inventory = write_inventory(tmp_path / "devices.yaml", [
        {"name": "here", "transport": "local", "workdir": str(tmp_path / "here work"), "python": DEVICE_PYTHON},
        dict(ssh_fleet.entries[1], workdir=str(tmp_path / "board-1 work"))])
    code = main(["run", str(test_models["cpu_fallback"]), str(test_models["bad_custom_op"]), "--devices",
                 str(inventory), "--out", str(tmp_path / "out"), "--profile", "--json", "--runs", "20",
                 "--min-seconds", "0.3", "--warmup", "1", "--warmup-min-seconds", "0"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1  # the custom-op model is skipped by the preflight (and so not profiled)
    run_dir = Path(doc["run_dir"])
    assert sorted(doc["profiles"]) == ["board-1", "here"]
    ratios = {}
    for device, profiles in doc["profiles"].items():
        assert (profiles["jobs"], profiles["failed"], profiles["reason"]) == (1, 0, None)
        # the run's job id + -profile
        assert profiles["files"] == [f"profiles/{device}/000-cpu_fallback---t1-profile.json"]
        summary = summarize(json.loads((run_dir / profiles["files"][0]).read_text()))
        assert summary["device"] == device
        assert [o["delegated"] for o in summary["ops"]] == [True, False, True, False, True]
        ratios[device] = summary["ratio"]
        assert RATIO_BAND[0] <= summary["ratio"] <= RATIO_BAND[1]
    print(f"run --profile cpu_fallback ratios: {ratios}")
    assert len(doc["results"]) == 4  # 2 devices x 2 models: profile jobs are not rows of the results
    assert sorted(json.loads((run_dir / "run.json").read_text())["profiles"]) == ["board-1", "here"]
