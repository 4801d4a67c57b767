"""The run store reads result documents of schema versions 1 and 2 (through agent.schema.upgrade) and
puts the version-2 facts (flags, model peak, energy, placement, delegation) into results.parquet."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest

from agent.runner import run_job
from controller.errors import InputError
from controller.fleet.store import RESULT_COLUMNS, RunStore
from tests.test_agent_run import quick
from tests.test_agent_schema import V1


def test_version_1_and_2_documents_become_rows_with_flags_next_to_the_status(test_models, tmp_path):
    store = RunStore.create(str(tmp_path), {"run_id": "r"}, run_id="r")
    v2 = run_job(quick(test_models["float32"], cpus="1", repeat=2, meta={"variant": "fp32", "model_name": "m"}))
    assert v2["status"] == "ok", v2["error"]
    store.save_result("dev", v2)
    store.save_result("old", copy.deepcopy(V1))
    results = store.write_tables()
    assert list(results.columns) == list(RESULT_COLUMNS)
    rows = {r["device"]: r for r in pd.read_parquet(tmp_path / "r" / "results.parquet").to_dict("records")}
    new, old = rows["dev"], rows["old"]
    assert new["flags"] == ",".join(v2["flags"]) and new["affinity"] == "1" and new["cluster"] == "all"
    assert new["process_count"] == 2 and new["between_process_cv"] == v2["timing"]["between_process_cv"]
    assert new["model_peak_kb"] == v2["memory"]["model_peak_kb"] > 0
    assert new["ops_delegated"] == 5 and new["ops_on_cpu"] == 0 and bool(new["xnnpack"]) is True
    assert pd.isna(new["mj_per_inference"]) and new["canary_ratio"] > 0
    # the version-1 document: migrated, its noise and cap shown as flags, the new numbers unknown
    assert old["status"] == "ok" and old["flags"] == "noisy,partial" and old["p50_ms"] == 1.0
    assert pd.isna(old["model_peak_kb"]) and pd.isna(old["affinity"])


def test_a_document_from_a_newer_agent_is_refused_naming_the_file(tmp_path):
    store = RunStore.create(str(tmp_path), {"run_id": "r"}, run_id="r")
    newer = dict(V1, schema_version=3)
    with pytest.raises(InputError, match=r"result schema version 3 is newer than this controller reads \(2\)"):
        store.save_result("dev", newer)
    path = tmp_path / "r" / "results" / "dev" / "001.json"  # as a newer agent would have left it
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(newer))
    with pytest.raises(InputError, match=r"results/dev/001.json: result schema version 3 is newer"):
        store.write_tables()
    with open(path) as fh:
        assert json.load(fh)["schema_version"] == 3  # left as it came
