"""edgebench inspect: every test model, the quantized-I/O conversions, --check, and --compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from controller.cli import main
from controller.model.reader import read_model
from tests import modelgen

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "models" / "demo"
UNREADABLE = ("bad_not_flatbuffer", "bad_truncated")


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.parametrize("name", sorted(modelgen.MODELS))
def test_inspect_every_test_model(capsys, test_models, name):
    path = test_models[name]
    rc, out, err = _cli(capsys, "inspect", path, "--json")
    if name in UNREADABLE:
        assert rc == 2 and str(path) in err and "TFLite" in err
        return
    assert rc == 0
    doc = json.loads(out)
    info = read_model(path)
    assert doc["inputs"] == [t.io_dict() for t in info.inputs]
    assert doc["op_counts"] == info.op_counts and doc["bytes"] == path.stat().st_size
    rc, table, _ = _cli(capsys, "inspect", path)
    assert rc == 0
    for t in info.inputs + info.outputs:
        assert t.name[:10] in table or t.name in table.replace("\n", "")
    assert "operators" in table and "weights" in table


def test_quantized_io_conversions(capsys, test_models):
    rc, out, _ = _cli(capsys, "inspect", test_models["uint8_io"], "--json")
    assert rc == 0
    row = json.loads(out)["io"][0]
    assert row["dtype"] == "uint8"
    scale, zp = row["scale"], row["zero_point"]
    mean, std = row["mean_std"]
    assert mean == zp and std == pytest.approx(1 / scale)
    low, high = row["float_range"]
    assert low == pytest.approx((0 - zp) * scale) and high == pytest.approx((255 - zp) * scale)
    rc, table, _ = _cli(capsys, "inspect", test_models["int8_io"])
    assert "(mean, std_dev)" in table
    assert "std_dev = 1 / scale" in table


def test_custom_flex_and_check(capsys, test_models):
    rc, out, _ = _cli(capsys, "inspect", test_models["bad_flex_op"], "--json")
    assert rc == 0 and json.loads(out)["flex_ops"] == ["FlexCumprod"]
    rc, out, _ = _cli(capsys, "inspect", test_models["dynamic_fc"], "--check", "tflite-runtime=2.14.0",
                      "--check", "ai-edge-litert=2.3.0", "--json")
    checks = json.loads(out)["checks"]
    assert [c["ok"] for c in checks] == [False, True]
    assert "FULLY_CONNECTED v12" in checks[0]["reasons"][0]
    rc, table, _ = _cli(capsys, "inspect", test_models["dynamic_fc"], "--check", "tflite-runtime=2.14.0")
    assert "does NOT load" in table
    rc, _, err = _cli(capsys, "inspect", test_models["float32"], "--check", "tflite-runtime")
    assert rc == 2 and "RUNTIME=VERSION" in err
    rc, _, err = _cli(capsys, "inspect", test_models["dynamic_length"])
    assert "dynamic input" in err and "seq" in err


def test_compare_demo_fp32_and_int8_layer_by_layer(capsys):
    rc, out, _ = _cli(capsys, "inspect", "--compare", DEMO / "demo.fp32.tflite", DEMO / "demo.int8.tflite",
                      "--inputs", DEMO / "demo.eval.npz", "--samples", "4", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["samples"] == 4 and doc["matched"] >= 10
    assert doc["only_in_a"] == [] and doc["only_in_b"] == [] and doc["shape_mismatch"] == []
    errors = [t["rel_rmse"] for t in doc["tensors"]]
    assert errors == sorted(errors, reverse=True)  # largest error first
    conv = [t for t in doc["tensors"] if "Relu" in t["name"]]
    assert conv and all(t["dtype_a"] == "float32" and t["dtype_b"] == "int8" for t in conv)
    assert all(0 < t["rel_rmse"] < 0.1 and t["cosine"] > 0.99 for t in conv)


def test_compare_says_which_tensors_could_not_be_matched(capsys, test_models, tmp_path):
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    rc, out, _ = _cli(capsys, "inspect", "--compare", test_models["float32"], test_models["fp16"],
                      "--inputs", tmp_path / "x.npy")
    assert rc == 0
    text = " ".join(out.split())
    assert "could not be matched - only in B" in text  # the fp16 model's DEQUANTIZE outputs
    rc, out, _ = _cli(capsys, "inspect", "--compare", test_models["float32"], test_models["fp16"],
                      "--inputs", tmp_path / "x.npy", "--json")
    doc = json.loads(out)
    fp16_info = read_model(test_models["fp16"])
    dequantized = {t.name for t in fp16_info.tensors if not t.constant and t.name not in
                   {u.name for u in read_model(test_models["float32"]).tensors}}
    assert set(doc["only_in_b"]) == dequantized and dequantized


def test_compare_usage_errors(capsys, test_models, tmp_path):
    rc, _, err = _cli(capsys, "inspect", "--compare", test_models["float32"], test_models["fp16"])
    assert rc == 2 and "--inputs" in err
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5, 5, 1), np.float32))
    rc, _, err = _cli(capsys, "inspect", "--compare", test_models["float32"], test_models["fp16"],
                      "--inputs", tmp_path / "wrong.npy")
    assert rc == 2 and "wrong.npy" in err and "[N, 8, 8, 1]" in err
    rc, _, err = _cli(capsys, "inspect", "--compare", test_models["float32"], test_models["two_inputs"],
                      "--inputs", tmp_path / "wrong.npy")
    assert rc == 2 and "one input" in err
    rc, _, err = _cli(capsys, "inspect")
    assert rc == 2 and "MODEL" in err
