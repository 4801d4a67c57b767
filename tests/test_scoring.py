"""controller.variants.scoring (the one scoring function) on hand-computed values, evaluate() on real
variants, and one two-output family scored the same in accuracy.json, results.parquet and the run table."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from controller.variants import evaluate as accuracy_eval
from controller.variants import manifest as mf
from controller.variants import scoring as accuracy

DEMO = Path(__file__).resolve().parent.parent / "models" / "demo"


def test_compare_on_hand_computed_values():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    cand = np.array([[1.0, 1.0], [0.0, 2.0]])
    m = accuracy.compare(ref, cand)
    assert m["cosine"] == pytest.approx((1 / math.sqrt(2) + 1.0) / 2)
    assert m["max_abs"] == 1.0
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    same = accuracy.compare(ref, ref)
    assert same == {"cosine": 1.0, "max_abs": 0.0, "rmse": 0.0, "rel_rmse": 0.0}
    assert m["rel_rmse"] == pytest.approx(math.sqrt(0.5) / math.sqrt(0.5))  # RMS of ref = sqrt(2/4)


def test_compare_zero_vectors_and_shape_mismatch():
    zeros = np.zeros((2, 3))
    assert accuracy.compare(zeros, zeros)["cosine"] == 1.0
    assert accuracy.compare(zeros, np.ones((2, 3)))["cosine"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        accuracy.compare(np.zeros((2, 3)), np.zeros((3, 2)))


def test_top1_and_drift_flag():
    outputs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert accuracy.top1(outputs, np.array([1, 0, 0, 0])) == 0.75
    with pytest.raises(ValueError):
        accuracy.top1(outputs, np.array([1, 0]))
    t = accuracy.Thresholds(top1_drop=2.0, min_cosine=0.99)
    assert not accuracy.drift_flag({"top1_drop_points": 2.0, "cosine": 0.99}, t)
    assert accuracy.drift_flag({"top1_drop_points": 2.1, "cosine": 0.999}, t)
    assert accuracy.drift_flag({"top1_drop_points": None, "cosine": 0.98}, t)
    assert not accuracy.drift_flag({"top1_drop_points": None, "cosine": None}, t)


def test_a_broken_variant_is_a_row_with_its_error_and_the_others_are_kept(tmp_path):
    for f in ("demo.fp32.tflite", "demo.int8.tflite", "demo.eval.npz"):
        shutil.copy(DEMO / f, tmp_path / f)
    doc = json.loads((DEMO / "manifest.json").read_text())
    doc["variants"] = {k: doc["variants"][k] for k in ("fp32", "fp16", "int8")}
    (tmp_path / "demo.fp16.tflite").write_bytes((DEMO / "demo.fp16.tflite").read_bytes()[:5000])
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    strict = accuracy.Thresholds(top1_drop=-1.0, min_cosine=0.99999)  # flags any int8 change
    report = accuracy_eval.evaluate(mf.load(tmp_path), thresholds=strict)
    rows = {r.variant: r for r in report.rows}
    assert [r.variant for r in report.rows] == ["fp32", "fp16", "int8"]
    assert rows["fp16"].status == "error" and "not_a_model" in rows["fp16"].error
    assert rows["fp32"].status == "ok" and rows["fp32"].top1 > 0.9
    assert rows["int8"].status == "ok" and rows["int8"].flagged
    assert any("cosine" in r for r in rows["int8"].reasons)
    assert report.flagged == ["int8"]


def test_score_takes_the_worst_output_and_top1_of_the_first():
    ref = {"logits": np.array([[3.0, 1.0], [0.0, 2.0]]), "emb": np.array([[1.0, 0.0], [0.0, 1.0]])}
    cand = {"logits": np.array([[3.0, 1.0], [0.0, 2.0]]), "emb": np.array([[1.0, 1.0], [0.0, 1.0]])}
    labels = np.array([0, 0])
    ref_top1 = accuracy.score(ref, labels=labels).top1
    assert ref_top1 == 0.5
    s = accuracy.score(cand, ref, labels, ref_top1, accuracy.Thresholds(top1_drop=2.0, min_cosine=0.9))
    assert s.per_output["logits"]["cosine"] == pytest.approx(1.0)
    assert s.per_output["emb"]["cosine"] == pytest.approx((1 / math.sqrt(2) + 1.0) / 2)
    assert s.worst_output == "emb"
    assert s.cosine == pytest.approx(s.per_output["emb"]["cosine"])
    assert s.max_abs == 1.0 and s.rmse == pytest.approx(0.5)  # emb: one 1.0 error in 4 values
    assert s.top1 == 0.5 and s.top1_drop_points == 0.0
    assert s.flagged and s.reasons == [f"cosine {s.cosine:.4f} to fp32 < 0.9"]
    assert not accuracy.score(ref, ref, labels, ref_top1).flagged


def test_score_leaves_out_outputs_that_do_not_match():
    ref = {"a": np.ones((2, 3))}
    s = accuracy.score({"a": np.ones((2, 3)), "b": np.ones((2, 2))}, ref)
    assert list(s.per_output) == ["a"] and s.cosine == 1.0
    none = accuracy.score({"a": np.ones((2, 4))}, ref)
    assert none.cosine is None and none.worst_output is None and not none.flagged


def test_two_output_family_scores_the_same_in_accuracy_json_run_table_and_parquet(test_models, tmp_path):
    """A real two-output model quantized (fp16, dynamic; ai-edge-quantizer), evaluated by convert --eval, then
    run on the local device: accuracy.json, results.parquet and the run table carry the same numbers."""
    import contextlib
    import io

    import pandas as pd
    import yaml

    from controller.cli import main
    from tests.fixtures_fleet import DEVICE_PYTHON

    rng = np.random.default_rng(7)
    x = rng.normal(size=(24, 1, 6)).astype(np.float32)
    np.save(tmp_path / "cal.npy", x)
    np.savez(tmp_path / "eval.npz", x=x, y=rng.integers(0, 3, size=24))  # first output: 3 values
    family = tmp_path / "fam"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["convert", str(test_models["two_outputs"]), "--out", str(family), "--name", "two",
                     "--variants", "fp32,fp16,dynamic", "--eval", str(tmp_path / "eval.npz"),
                     "--min-cosine", "1.0", "--json"]) == 0
    saved = {r["variant"]: r for r in json.loads((family / "accuracy.json").read_text())["variants"]}
    assert len(saved["dynamic"]["per_output"]) == 2
    assert saved["dynamic"]["worst_output"] in saved["dynamic"]["per_output"]

    fleet = tmp_path / "devices.yaml"
    fleet.write_text(yaml.safe_dump({"devices": [{"name": "here", "transport": "local", "python": DEVICE_PYTHON,
                                                  "workdir": str(tmp_path / "work")}]}))
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        code = main(["run", str(family), "--devices", str(fleet), "--out", str(tmp_path / "out"), "--runs", "2",
                     "--warmup", "0", "--min-seconds", "0", "--warmup-min-seconds", "0",
                     "--min-cosine", "1.0"])
    run_dir = next(p for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))  # not .history/
    frame = pd.read_parquet(run_dir / "results.parquet").set_index("variant")
    for variant, row in saved.items():
        if row["status"] != "ok":
            continue
        got = frame.loc[variant]
        assert got["cosine_vs_fp32"] == pytest.approx(row["cosine"], rel=1e-6, abs=1e-9)
        assert got["max_abs_vs_fp32"] == pytest.approx(row["max_abs"], rel=1e-5, abs=1e-9)
        assert got["rmse_vs_fp32"] == pytest.approx(row["rmse"], rel=1e-5, abs=1e-9)
        assert got["top1"] == pytest.approx(row["top1"])
        assert got["worst_output"] == row["worst_output"]
        assert bool(got["drift"]) == row["flagged"]
    # the strict threshold (any change) flags dynamic in both places, the run exits DRIFT, the table says so
    assert saved["dynamic"]["flagged"] and bool(frame.loc["dynamic", "drift"])
    assert code == 6
    text = table.getvalue()
    assert "drift" in text and f"cos {saved['dynamic']['cosine']:.4f}" in text
