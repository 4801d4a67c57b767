"""controller.accuracy: the metrics on hand-computed values, and evaluate() on real variants."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from controller import accuracy
from controller import manifest as mf

DEMO = Path(__file__).resolve().parent.parent / "models" / "demo"


def test_compare_on_hand_computed_values():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    cand = np.array([[1.0, 1.0], [0.0, 2.0]])
    m = accuracy.compare(ref, cand)
    assert m["cosine"] == pytest.approx((1 / math.sqrt(2) + 1.0) / 2)
    assert m["max_abs"] == 1.0
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    same = accuracy.compare(ref, ref)
    assert same == {"cosine": 1.0, "max_abs": 0.0, "rmse": 0.0}


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
    report = accuracy.evaluate(mf.load(tmp_path), thresholds=strict)
    rows = {r.variant: r for r in report.rows}
    assert [r.variant for r in report.rows] == ["fp32", "fp16", "int8"]
    assert rows["fp16"].status == "error" and "not_a_model" in rows["fp16"].error
    assert rows["fp32"].status == "ok" and rows["fp32"].top1 > 0.9
    assert rows["int8"].status == "ok" and rows["int8"].flagged
    assert any("cosine" in r for r in rows["int8"].reasons)
    assert report.flagged == ["int8"]
