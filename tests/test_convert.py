"""edgebench convert: a real Keras model through all four variants, and the fp32 .tflite path through
ai-edge-quantizer without TensorFlow. The conversions run once per session (tests/fixtures_convert.py)."""

from __future__ import annotations

import numpy as np
import pytest

from controller.model.compat import check
from controller.model.reader import read_model
from controller.variants import manifest as mf
from tests.fixtures_convert import results


def _run_variant(path, x):
    """Outputs of a .tflite for float inputs x (N samples), through the agent's quantize/dequantize."""
    from ai_edge_litert.interpreter import Interpreter

    from agent.tensors import dequantize, quantize

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for sample in x:
        value = sample[None].astype(np.float32)
        if inp["dtype"] != np.float32:
            value = quantize(value, *inp["quantization"], inp["dtype"])
        it.set_tensor(inp["index"], value)
        it.invoke()
        raw = it.get_tensor(out["index"])
        outs.append(dequantize(raw, *out["quantization"]) if out["dtype"] != np.float32 else raw)
    return np.concatenate(outs)


def test_cli_exit_code_and_json_document(keras_family):
    full = results(keras_family)["full"]
    assert full["rc"] == 0
    doc = full["doc"]
    assert doc["manifest"].endswith("family/manifest.json")
    assert list(doc["variants"]) == ["fp32", "fp16", "dynamic", "int8"]
    assert doc["accuracy"]["samples"] == 397 and doc["accuracy"]["labels"] is True
    assert doc["warnings"] == []


def test_manifest_describes_the_files(keras_family):
    family = mf.load(keras_family / "family")
    assert family.name == "small"
    assert family.source["kind"] == "keras" and family.source["path"].endswith("small.keras")
    assert family.verify() == []
    assert family.eval == {"file": "small.eval.npz", "samples": 397, "labels": True}
    for name, v in family.variants.items():
        info = read_model(v.path)
        assert v.file == f"small.{name}.tflite"
        assert (v.sha256, v.bytes) == (info.sha256, info.bytes)
        assert v.inputs == [t.io_dict() for t in info.inputs]
        assert v.min_runtime_version == info.min_runtime_version
    assert family.variants["fp32"].converter["name"] == "tensorflow"
    assert family.variants["fp32"].calibration is None
    cal = family.variants["int8"].calibration
    assert cal["samples"] == 100 and cal["random"] is False and cal["source"].endswith("cal.npy")


def test_variant_dtypes_and_quantization(keras_family):
    family = mf.load(keras_family / "family")
    infos = {name: read_model(v.path) for name, v in family.variants.items()}
    weight_dtypes = {name: {w.dtype for w in info.weights} for name, info in infos.items()}
    assert "float32" in weight_dtypes["fp32"] and "int8" not in weight_dtypes["fp32"]
    assert "float16" in weight_dtypes["fp16"]
    assert "int8" in weight_dtypes["dynamic"]
    assert infos["dynamic"].inputs[0].dtype == "float32"  # dynamic range: float activations and I/O
    int8 = infos["int8"]
    assert "float32" not in weight_dtypes["int8"] and "float16" not in weight_dtypes["int8"]
    assert int8.inputs[0].dtype == "int8" and int8.outputs[0].dtype == "int8"  # --io int8 (default)
    # Inputs were digits scaled to [0, 1]: the input quantization covers about that range.
    low, high = int8.inputs[0].float_range()
    assert low == pytest.approx(0.0, abs=0.01) and high == pytest.approx(1.0, abs=0.02)
    # The softmax output of a full-integer model is quantized with scale 1/256, zero point -128.
    assert int8.outputs[0].scale == pytest.approx(1 / 256) and int8.outputs[0].zero_point == -128
    manifest_io = family.variants["int8"].inputs[0]
    assert (manifest_io["scale"], manifest_io["zero_point"]) == (int8.inputs[0].scale, int8.inputs[0].zero_point)


def test_sizes_shrink_as_expected(keras_family):
    family = mf.load(keras_family / "family")
    fp32 = family.variants["fp32"].bytes
    assert fp32 > 200_000  # weights dominate the file, so the ratios mean something
    assert 0.45 < family.variants["fp16"].bytes / fp32 < 0.56
    assert 0.22 < family.variants["dynamic"].bytes / fp32 < 0.32
    assert 0.22 < family.variants["int8"].bytes / fp32 < 0.32


def test_accuracy_table_is_saved_and_sane(keras_family):
    import json

    report = json.loads((keras_family / "family" / "accuracy.json").read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    assert report["thresholds"] == {"top1_drop": 2.0, "min_cosine": 0.99}
    assert rows["fp32"]["top1"] > 0.85  # 10 classes: chance is 0.1
    assert abs(rows["int8"]["top1"] - rows["fp32"]["top1"]) < 0.04
    for name in ("fp16", "dynamic", "int8"):
        assert rows[name]["status"] == "ok"
        assert rows[name]["cosine"] > 0.99
        assert rows[name]["max_abs"] > 0  # quantization changes the outputs, a little
        assert rows[name]["flagged"] is False
    assert rows["fp16"]["rmse"] < rows["int8"]["rmse"]  # fewer bits, more error


def test_dynamic_variant_needs_217_but_compat_runtime_214_fixes_it(keras_family):
    plain = keras_family / "family" / "small.dynamic.tflite"
    fc = [op for op in read_model(plain).ops if op.name == "FULLY_CONNECTED"]
    assert max(op.version for op in fc) >= 12
    assert not check(plain, "tflite-runtime", "2.14.0").ok
    compat_run = results(keras_family)["compat"]
    assert compat_run["rc"] == 0
    assert compat_run["doc"]["compat"]["dynamic"]["ok"] is True
    fixed = keras_family / "compat" / "small.dynamic.tflite"
    assert max(op.version for op in read_model(fixed).ops if op.name == "FULLY_CONNECTED") <= 9
    assert mf.load(keras_family / "compat").variants["dynamic"].options["per_tensor_dense"] is True
    from tflite_runtime.interpreter import Interpreter

    Interpreter(model_path=str(fixed)).allocate_tensors()  # the real proof: 2.14 loads it


def test_fp32_tflite_is_quantized_without_tensorflow(keras_family, quantized_family):
    run = results(quantized_family)
    assert run["rc"] == 0
    assert run["tensorflow_imported"] is False
    family = mf.load(quantized_family / "family")
    assert family.source["kind"] == "tflite"
    assert family.variants["fp32"].sha256 == mf.load(keras_family / "family").variants["fp32"].sha256
    for name in ("fp16", "dynamic", "int8"):
        assert family.variants[name].converter["name"] == "ai-edge-quantizer"
    assert family.variants["int8"].calibration["samples"] == 100
    assert {w.dtype for w in read_model(family.variants["fp16"].path).weights} >= {"float16"}
    assert read_model(family.variants["int8"].path).inputs[0].dtype == "int8"
    # Outputs checked against fp32, in this process, on the held-out digits.
    with np.load(quantized_family / "eval.npz") as data:
        x, y = data["x"][:100], data["y"][:100]
    ref = _run_variant(family.variants["fp32"].path, x)
    # Error bounds grow with fewer bits: fp16 weights barely move a probability, int8 activations
    # (steps of 1/256 on the softmax) can move a borderline one a lot, but rarely and not the answer.
    for name, max_abs, mean_abs in (("fp16", 0.01, 1e-4), ("dynamic", 0.05, 1e-3), ("int8", 0.5, 0.02)):
        got = _run_variant(family.variants[name].path, x)
        assert got.shape == ref.shape
        assert np.max(np.abs(got - ref)) < max_abs, name
        assert np.mean(np.abs(got - ref)) < mean_abs, name
        assert np.mean(np.argmax(got, 1) == np.argmax(ref, 1)) > 0.95, name
    assert np.mean(np.argmax(ref, 1) == y) > 0.85
    rows = {r["variant"]: r for r in run["doc"]["accuracy"]["variants"]}
    assert abs(rows["int8"]["top1"] - rows["fp32"]["top1"]) < 0.05


def test_int8_calibrated_on_a_folder_of_images(keras_family):
    run = results(keras_family)["images"]
    assert run["rc"] == 0
    int8 = run["doc"]["variants"]["int8"]
    assert int8["calibration"]["samples"] == 30 and int8["calibration"]["source"].endswith("images")
    low, high = read_model(keras_family / "from_images" / "small.int8.tflite").inputs[0].float_range()
    assert low == pytest.approx(0.0, abs=0.01) and high == pytest.approx(1.0, abs=0.02)


def test_savedmodel_and_h5_sources(keras_family):
    saved = results(keras_family)["saved_model"]
    assert saved["rc"] == 0
    assert saved["doc"]["source"]["kind"] == "saved_model"
    assert list(saved["doc"]["variants"]) == ["fp32", "dynamic"]
    keras_fp32 = read_model(keras_family / "family" / "small.fp32.tflite")
    saved_fp32 = read_model(keras_family / "from_saved" / "saved.fp32.tflite")
    assert saved_fp32.inputs[0].shape == keras_fp32.inputs[0].shape
    assert saved_fp32.op_counts.get("FULLY_CONNECTED") == keras_fp32.op_counts.get("FULLY_CONNECTED")
    h5 = results(keras_family)["h5"]
    assert h5["rc"] == 0 and h5["doc"]["source"]["kind"] == "keras"
    assert h5["doc"]["variants"]["fp32"]["bytes"] == pytest.approx(keras_fp32.bytes, rel=0.05)


@pytest.mark.parametrize("io, dtype", [("uint8", "uint8"), ("float", "float32")])
def test_int8_io_dtype_follows_the_option(keras_family, io, dtype):
    run = results(keras_family)[f"io_{io}"]
    assert run["rc"] == 0
    info = read_model(keras_family / f"io_{io}" / "small.int8.tflite")
    assert info.inputs[0].dtype == dtype and info.outputs[0].dtype == dtype
    assert "int8" in {w.dtype for w in info.weights} and "float32" not in {w.dtype for w in info.weights}
    assert run["doc"]["variants"]["int8"]["options"]["io"] == io


def test_a_variant_the_converter_cannot_make_does_not_lose_the_others(keras_family):
    run = results(keras_family)["partial"]
    assert run["rc"] == 4  # a tool failed
    assert "int8" in run["doc"]["failures"] and "converter failed on the int8" in run["doc"]["failures"]["int8"]
    assert "could not make int8" in run["stderr"]
    family = mf.load(keras_family / "partial")
    assert list(family.variants) == ["fp32"] and family.verify() == []
    assert not (keras_family / "partial" / "ids.int8.tflite").exists()


def test_int8_that_keeps_a_float_op_is_warned_about(keras_family, capsys):
    run = results(keras_family)["float_fallback"]
    assert run["rc"] == 0
    warnings = run["doc"]["warnings"]
    assert any("SIN in float" in w for w in warnings)
    path = keras_family / "float_fallback" / "sin.int8.tflite"
    assert read_model(path).float_compute_ops() == ["SIN"]
    assert read_model(keras_family / "family" / "small.int8.tflite").float_compute_ops() == []
    from controller.cli import main

    assert main(["inspect", str(path)]) == 0
    assert "ops computing in float: SIN" in capsys.readouterr().out


def test_a_variant_that_cannot_be_evaluated_is_a_row_with_its_error(keras_family):
    run = results(keras_family)["eval_old_runtime"]
    assert run["rc"] == 1  # partial: the other rows are kept
    rows = {r["variant"]: r for r in run["doc"]["accuracy"]["variants"]}
    assert rows["fp32"]["status"] == "ok" and rows["fp32"]["top1"] > 0.85
    assert rows["fp32"]["runtime"].startswith("tflite-runtime 2.14")
    assert rows["dynamic"]["status"] == "error" and "FULLY_CONNECTED" in rows["dynamic"]["error"]
    assert "could not evaluate" in run["stderr"]
    assert mf.load(keras_family / "eval_214").verify() == []
