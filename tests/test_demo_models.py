"""The committed demo family (models/demo, made by `make models`): what make demo and the fleet run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from controller.model import compat
from controller.variants import evaluate as accuracy
from controller.variants import manifest as mf
from models.make_demo import EVAL_SAMPLES, SIZE, digits_32, split

DEMO = Path(__file__).resolve().parent.parent / "models" / "demo"
RUNTIMES = {"tflite-runtime": "2.14.0", "ai-edge-litert": "2.3.0"}


@pytest.fixture(scope="module")
def demo() -> mf.Manifest:
    return mf.load(DEMO)


@pytest.fixture(scope="module")
def report(demo) -> accuracy.AccuracyReport:
    return accuracy.evaluate(demo)


def test_family_is_complete_small_and_unchanged(demo):
    assert list(demo.variants) == ["fp32", "fp16", "dynamic", "int8"]
    assert demo.verify() == []
    assert demo.eval == {"file": "demo.eval.npz", "samples": EVAL_SAMPLES, "labels": True}
    assert sum(f.stat().st_size for f in DEMO.iterdir()) <= 5 * 1024 * 1024
    assert demo.variants["fp32"].inputs[0]["shape"] == [1, SIZE, SIZE, 1]
    assert demo.variants["int8"].calibration["random"] is False


def test_eval_set_is_the_held_out_split():
    x, y = digits_32()
    x_train, _, x_eval, y_eval = split(x, y)
    with np.load(DEMO / "demo.eval.npz") as data:
        np.testing.assert_array_equal(data["y"], y_eval)
        np.testing.assert_allclose(data["x"], x_eval)
    train_keys = {row.tobytes() for row in x_train}
    assert not any(row.tobytes() in train_keys for row in x_eval)
    assert len(np.unique(y_eval)) == 10


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_every_variant_loads_in_both_runtimes(demo, runtime):
    module = "tflite_runtime.interpreter" if runtime == "tflite-runtime" else "ai_edge_litert.interpreter"
    paths = [str(v.path) for v in demo.variants.values()]
    code = (f"import sys; from {module} import Interpreter\n"
            "for p in sys.argv[1:]: Interpreter(model_path=p).allocate_tensors()\nprint('loaded', len(sys.argv) - 1)")
    proc = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loaded 4" in proc.stdout
    for v in demo.variants.values():
        assert compat.check(v.path, runtime, RUNTIMES[runtime]).ok


def test_accuracy_shows_the_real_effect_of_each_variant(report):
    rows = {r.variant: r for r in report.rows}
    assert all(r.status == "ok" for r in report.rows)
    assert rows["fp32"].top1 > 0.9  # chance is 0.1
    assert abs(rows["int8"].top1 - rows["fp32"].top1) <= 0.03
    assert abs(rows["fp16"].top1 - rows["fp32"].top1) <= 0.01
    # Error grows as bits go: fp16 weights < int8 weights < int8 weights and activations.
    assert 0 < rows["fp16"].rmse < rows["dynamic"].rmse < rows["int8"].rmse
    assert rows["int8"].cosine > 0.99


def test_committed_accuracy_table_matches_a_fresh_run(report):
    saved = {r["variant"]: r for r in json.loads((DEMO / "accuracy.json").read_text())["variants"]}
    for row in report.rows:
        assert saved[row.variant]["top1"] == pytest.approx(row.top1)
        assert saved[row.variant]["rmse"] == pytest.approx(row.rmse, rel=1e-3, abs=1e-7)
