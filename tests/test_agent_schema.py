"""Result schema version 2: its migration from version 1, and the memory that belongs to the model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from agent import probes, schema
from agent.errors import SchemaError
from agent.runner import run_job
from tests.test_agent_run import quick

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "models" / "demo"

V1 = {  # a version-1 document as PR #1's agent wrote it (trimmed samples)
    "schema_version": 1, "status": "ok", "error": None,
    "job": {"model": "/m/demo.int8.tflite", "id": "001", "threads": 1, "meta": {"variant": "int8"}},
    "model": {"path": "/m/demo.int8.tflite", "sha256": "ab" * 32, "bytes": 100, "inputs": [], "outputs": []},
    "runtime": {"name": "ai-edge-litert", "version": "2.3.0", "module": "ai_edge_litert.interpreter",
                "num_threads": 1, "xnnpack_requested": True, "delegates": ["XNNPACK"]},
    "timing": {"init_ms": 1.0, "first_inference_ms": 2.0, "count": 3, "mean_ms": 1.0, "std_ms": 0.27,
               "min_ms": 0.8, "max_ms": 1.3, "p50_ms": 1.0, "p90_ms": 1.2, "p99_ms": 1.3, "warmup_count": 1,
               "warmup_ms": 1.0, "noisy": True, "stop_reason": "max_seconds", "samples_us": [800, 1000, 1300]},
    "memory": {"rss_before_load_kb": 40000, "rss_after_init_kb": 50000, "peak_rss_kb": 63000},
    "env": {"hostname": "rpi", "arch": "aarch64", "governor": "ondemand", "freq_mhz": 1800},
    "warnings": [], "outputs_file": None,
}


def test_a_version_1_document_gains_every_version_2_key():
    doc = schema.upgrade(V1)
    assert doc["schema_version"] == 2 and doc["migrated_from"] == 1
    assert set(schema.TOP_LEVEL_KEYS) <= set(doc)
    assert doc["flags"] == ["noisy", "partial"]  # what version 1 recorded, as flags
    assert doc["processes"] == []
    assert doc["memory"]["model_peak_kb"] is None and doc["memory"]["peak_rss_kb"] == 63000
    assert set(doc["memory"]) == set(schema.MEMORY_KEYS) and set(doc["timing"]) >= set(schema.TIMING_KEYS)
    assert doc["energy"]["mj_per_inference"] is None and "schema version 1" in doc["energy"]["reason"]
    assert doc["env"]["affinity"] is None and doc["env"]["cluster"] is None and doc["env"]["governor"] == "ondemand"
    assert doc["runtime"]["delegation"] is None and doc["runtime"]["delegates"] == ["XNNPACK"]
    assert doc["timing"]["samples_us"] == [800, 1000, 1300]
    assert V1["schema_version"] == 1 and "flags" not in V1  # the input is left alone
    json.dumps(doc, allow_nan=False)


def test_a_version_2_document_passes_through_unchanged(test_models):
    doc = run_job(quick(test_models["float32"]))
    assert schema.upgrade(doc) == doc and schema.upgrade(doc) is not doc
    assert schema.upgrade(schema.upgrade(V1)) == schema.upgrade(V1)


@pytest.mark.parametrize("bad,needle", [({"schema_version": 3}, ("schema_version 3, newer than this edgebench "
                                                                   "reads (2); upgrade edgebench")),
                                        ({"status": "ok"}, "no integer schema_version"),
                                        ([1, 2], "not an edgebench result document"),
                                        ({"schema_version": True}, "no integer schema_version"),
                                        ({"schema_version": 0}, "versions start at 1")])
def test_newer_or_foreign_documents_are_refused_clearly(bad, needle):
    with pytest.raises(SchemaError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        schema.upgrade(bad)


def test_flags_are_known_kept_once_and_in_order():
    doc = {"flags": ["partial"]}
    schema.add_flag(doc, "noisy")
    schema.add_flag(doc, "partial")
    schema.add_flag(doc, "drift")
    assert doc["flags"] == ["noisy", "partial", "drift"]
    with pytest.raises(ValueError, match="unknown flag"):
        schema.add_flag(doc, "slow")


def test_the_peak_counter_resets_to_the_current_rss():
    ballast = bytearray(64 * 1024 * 1024)  # raise the peak by 64 MiB, then drop it
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    del ballast
    before = probes.memory_kb()
    rss = probes.reset_peak()
    after = probes.memory_kb()
    assert before["peak_kb"] - before["rss_kb"] > 50_000
    assert rss is not None and after["peak_kb"] - after["rss_kb"] < 4_000


def test_with_identical_inputs_the_int8_model_peak_is_not_above_fp32s():
    """The demo family with its eval set as inputs: the int8 variant's process peaks higher (its float
    inputs are quantized in the measuring process) but the model's own peak is lower."""
    docs = {variant: run_job(quick(DEMO / f"demo.{variant}.tflite", inputs=str(DEMO / "demo.eval.npz")))
            for variant in ("fp32", "int8")}
    for doc in docs.values():
        assert doc["status"] == "ok", doc["error"]
    fp32, int8 = docs["fp32"]["memory"], docs["int8"]["memory"]
    assert 0 < int8["model_peak_kb"] <= fp32["model_peak_kb"]
    assert int8["model_peak_kb"] < int8["peak_rss_kb"] - int8["rss_before_load_kb"]  # inputs are not the model's
    assert copy.deepcopy(docs["int8"]["inputs"]) == {"source": str(DEMO / "demo.eval.npz"), "count": 360}
