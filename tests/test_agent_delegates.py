"""Delegates as a dimension: what XNNPACK took, external delegates, and their failures as documents.

No accelerator delegate ships in the installed wheels (``find .venv -name '*.so'`` has none exporting
``tflite_plugin_create_delegate``), so the external-delegate tests use a minimal delegate compiled here
from tests/nop_delegate.c (a real library loaded by the real runtimes), a system library that is not a
delegate, and a path that does not exist.
"""

from __future__ import annotations

import _ctypes
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import delegation
from agent.runner import run_job
from tests.test_agent_run import RUNTIMES, quick

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def nop_delegate(tmp_path_factory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler (cc) is needed to build the test delegate: apt-get install gcc"
    target = tmp_path_factory.mktemp("delegate") / "libnop_delegate.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(target), str(HERE / "nop_delegate.c")],
                   check=True, timeout=120)
    return target


@pytest.mark.parametrize("runtime,taken,cpu_ops", [
    ("ai-edge-litert", 6, {"CAST": 3, "GATHER": 1, "MAXIMUM": 1, "MINIMUM": 1}),
    ("tflite-runtime", 5, {"CAST": 3, "GATHER": 1, "MAXIMUM": 1, "MINIMUM": 1, "SUM": 1})])
def test_xnnpack_takes_part_of_a_model_and_the_rest_is_counted_on_the_cpu(test_models, runtime, taken, cpu_ops):
    doc = run_job(quick(test_models["int_inputs"], runtime=runtime))
    assert doc["status"] == "ok", doc["error"]
    counted = doc["runtime"]["delegation"]
    assert counted["ops"] == 12 and counted["delegate_nodes"] == 1
    assert counted["ops_delegated"] == taken and counted["ops_on_cpu"] == 12 - taken
    assert counted["cpu_ops"] == cpu_ops
    assert counted["by_delegate"] == {"XNNPACK": {"nodes": 1, "ops": taken}}
    assert doc["runtime"]["delegates"] == ["XNNPACK"] and doc["runtime"]["delegate"] is None


def test_without_xnnpack_every_op_runs_on_the_cpu(test_models):
    doc = run_job(quick(test_models["float32"], xnnpack=False))
    counted = doc["runtime"]["delegation"]
    assert (counted["delegate_nodes"], counted["ops_delegated"], counted["ops_on_cpu"]) == (0, 0, 5)
    assert counted["cpu_ops"] == {"CONV_2D": 2, "FULLY_CONNECTED": 1, "MEAN": 1, "SOFTMAX": 1}
    assert doc["runtime"]["delegates"] == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_external_delegate_loads_and_what_it_took_is_reported(test_models, nop_delegate, runtime):
    doc = run_job(quick(test_models["float32"], runtime=runtime, delegate=str(nop_delegate),
                        delegate_options={"mode": "take-nothing"}))
    assert doc["status"] == "ok", doc["error"]
    rt = doc["runtime"]
    assert rt["delegate"] == str(nop_delegate) and rt["delegate_options"] == {"mode": "take-nothing"}
    # the external delegate ran and took nothing; XNNPACK (applied after it) took the whole graph
    assert rt["delegation"]["by_delegate"] == {"libnop_delegate.so": {"nodes": 0, "ops": 0},
                                               "XNNPACK": {"nodes": 1, "ops": 5}}
    assert rt["delegates"] == ["XNNPACK"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_delegate_that_rejects_the_model_is_a_clear_error_document(test_models, nop_delegate, runtime):
    doc = run_job(quick(test_models["float32"], runtime=runtime, delegate=str(nop_delegate),
                        delegate_options={"mode": "reject"}))
    assert doc["status"] == "error" and doc["error"]["kind"] == "delegate_rejected"
    assert str(nop_delegate) in doc["error"]["message"] and "without --delegate" in doc["error"]["message"]
    assert doc["runtime"]["delegate"] == str(nop_delegate)


@pytest.mark.parametrize("library,options,needle", [
    ("/nonexistent/libdelegate.so", {}, "does not exist on this device"),
    (_ctypes.__file__, {}, "lacks tflite_plugin_create_delegate"),
    ("NOP", {"mode": "fail"}, "Failed to load delegate"),
])
def test_a_delegate_that_cannot_load_is_a_delegate_load_document(test_models, nop_delegate, library, options,
                                                                 needle):
    library = str(nop_delegate) if library == "NOP" else library
    doc = run_job(quick(test_models["float32"], delegate=library, delegate_options=options))
    assert doc["status"] == "error" and doc["error"]["kind"] == "delegate_load"
    assert needle in doc["error"]["message"] and library in doc["error"]["message"]


def test_a_bad_delegate_job_never_stops_the_batch(test_models, tmp_path):
    settings = {"runs": 3, "min_seconds": 0, "warmup_min_seconds": 0}
    jobs = [{"model": str(test_models["float32"]), "id": "bad", "delegate": _ctypes.__file__, **settings},
            {"model": str(test_models["float32"]), "id": "good", **settings}]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, "-m", "agent", "batch", str(tmp_path / "jobs.json"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120, check=False,
                          cwd=HERE.parent)
    assert proc.returncode == 1, proc.stderr
    docs = {n: json.loads((tmp_path / "out" / f"{n}.json").read_text()) for n in ("bad", "good")}
    assert docs["bad"]["error"]["kind"] == "delegate_load" and docs["good"]["status"] == "ok"


def test_the_run_command_takes_path_and_options(test_models, nop_delegate):
    argv = [sys.executable, "-m", "agent", "run", str(test_models["float32"]), "--runs", "2", "--min-seconds",
            "0", "--warmup-min-seconds", "0", "--json", "--delegate", f"{nop_delegate}:mode=take-nothing,x=1"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)["job"]
    assert job["delegate"] == str(nop_delegate) and job["delegate_options"] == {"mode": "take-nothing", "x": "1"}
    bad = subprocess.run(argv[:-1] + [f"{nop_delegate}:novalue"], capture_output=True, text=True, timeout=120,
                         check=False, cwd=HERE.parent)
    assert bad.returncode == 2 and "is not key=value" in bad.stderr


@pytest.mark.parametrize("text,expected", [("/x/libd.so", ("/x/libd.so", {})),
                                           ("/x/libd.so:a=1,b=", ("/x/libd.so", {"a": "1", "b": ""}))])
def test_delegate_specs_parse(text, expected):
    assert delegation.parse_spec(text) == expected


class Graph:
    """Node records shaped like ``_get_ops_details()`` (the runtimes' own output is tested above)."""

    def __init__(self, nodes):
        self.nodes = nodes

    def _get_ops_details(self):
        return self.nodes


def test_two_partitions_are_walked_apart_and_the_op_between_them_stays_on_the_cpu():
    nodes = [{"index": 0, "op_name": "CONV_2D", "inputs": [0, 10], "outputs": [1]},
             {"index": 1, "op_name": "RELU", "inputs": [1], "outputs": [2]},
             {"index": 2, "op_name": "CUSTOM_X", "inputs": [2], "outputs": [3]},
             {"index": 3, "op_name": "ADD", "inputs": [3, 11], "outputs": [4]},
             {"index": 4, "op_name": "DELEGATE", "inputs": [0, 10], "outputs": [2]},
             {"index": 5, "op_name": "DELEGATE", "inputs": [3, 11], "outputs": [4]}]
    counted = delegation.count(Graph(nodes), external_nodes={4}, external="/lib/libnpu.so", xnnpack=True)
    assert counted["ops_delegated"] == 3 and counted["cpu_ops"] == {"CUSTOM_X": 1}
    assert counted["by_delegate"] == {"libnpu.so": {"nodes": 1, "ops": 2}, "XNNPACK": {"nodes": 1, "ops": 1}}
    assert delegation.applied(counted) == ["libnpu.so", "XNNPACK"]
    assert delegation.count(object()) is None
