"""controller.model.reader.read_model: a pure-Python reader, checked against a real runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.errors import InputError
from controller.model.reader import BUILTIN_OPERATORS, read_model, read_model_bytes
from tests import modelgen

GOOD = [n for n in modelgen.MODELS if n not in ("bad_not_flatbuffer", "bad_truncated", "bad_flex_op",
                                                 "bad_custom_op")]


def _runtime_details(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    return it.get_input_details(), it.get_output_details()


@pytest.mark.parametrize("name", GOOD)
def test_io_matches_what_the_runtime_reports(test_models, name):
    info = read_model(test_models[name])
    inputs, outputs = _runtime_details(test_models[name])
    for mine, theirs in ((info.inputs, inputs), (info.outputs, outputs)):
        assert [t.name for t in mine] == [d["name"] for d in theirs]
        for t, d in zip(mine, theirs):
            assert t.index == d["index"]
            assert t.shape == list(d["shape"])
            assert t.shape_signature == list(d["shape_signature"])
            assert t.dtype == np.dtype(d["dtype"]).name
            scale, zero_point = d["quantization"]
            if scale:
                assert t.scale == pytest.approx(scale, rel=1e-7)
                assert t.zero_point == zero_point
            else:
                assert t.scale is None and t.zero_point is None


def test_float32_model_facts(test_models):
    path = test_models["float32"]
    info = read_model(path)
    assert info.bytes == path.stat().st_size
    assert len(info.sha256) == 64
    assert info.op_counts["CONV_2D"] == 2
    assert info.op_counts["FULLY_CONNECTED"] == 1
    assert info.op_counts["SOFTMAX"] == 1
    assert info.custom_ops == [] and info.flex_ops == []
    float_weights = {w.dtype: w for w in info.weights}["float32"]
    # 3*3*1*8 + 8 + 3*3*8*16 + 16 + 16*10 + 10 floats
    assert float_weights.bytes == 4 * (72 + 8 + 1152 + 16 + 160 + 10)
    assert info.min_runtime_version and info.min_runtime_version[0].isdigit()
    assert len(info.subgraphs) == 1 and info.subgraphs[0].operators == sum(info.op_counts.values())
    assert info.sparse_tensors == []
    doc = info.to_dict()
    assert doc["inputs"][0]["name"] == info.inputs[0].name and doc["op_counts"] == info.op_counts


def test_quantized_variants_show_their_weight_dtypes(test_models):
    int8 = read_model(test_models["int8_io"])
    fp16 = read_model(test_models["fp16"])
    assert "int8" in {w.dtype for w in int8.weights}
    assert "float32" not in {w.dtype for w in int8.weights}
    assert {w.dtype for w in fp16.weights} >= {"float16"}
    assert fp16.op_counts.get("DEQUANTIZE", 0) >= 3
    assert int8.inputs[0].dtype == "int8" and int8.inputs[0].scale > 0
    fc = [op for op in read_model(test_models["dynamic_fc"]).ops if op.name == "FULLY_CONNECTED"]
    assert fc and fc[0].version == 12


def test_custom_and_flex_ops_are_named(test_models):
    assert read_model(test_models["bad_flex_op"]).flex_ops == ["FlexCumprod"]
    custom = read_model(test_models["bad_custom_op"])
    assert custom.custom_ops == ["Cumprod"] and custom.flex_ops == []


@pytest.mark.parametrize("name", ["bad_not_flatbuffer", "bad_truncated"])
def test_bad_files_are_input_errors_naming_the_file(test_models, name):
    with pytest.raises(InputError) as err:
        read_model(test_models[name])
    assert str(test_models[name]) in str(err.value)
    assert "TFLite" in str(err.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="nope.tflite does not exist"):
        read_model(tmp_path / "nope.tflite")
    with pytest.raises(InputError, match="is a directory"):
        read_model(tmp_path)


def test_every_truncation_is_an_input_error_or_a_clean_read(test_models):
    data = test_models["int8_io"].read_bytes()
    cuts = sorted(set(np.linspace(0, len(data) - 1, 97).astype(int).tolist()))
    outcomes = {"error": 0, "read": 0}
    for cut in cuts:  # bounded: 97 cut points
        try:
            read_model_bytes(data[:cut], name=f"cut{cut}")
            outcomes["read"] += 1
        except InputError as exc:
            assert f"cut{cut}" in str(exc)
            outcomes["error"] += 1
    assert outcomes["error"] >= len(cuts) - 5  # the tail is constant data only a few cuts miss


def _patched_model(path: Path, patch) -> bytes:
    """Unpack a real model with the schema's object API, change it, pack it again."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(path.read_bytes(), 0))
    patch(model, schema)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_builtin_code_wins_over_the_deprecated_byte(test_models, tmp_path):
    stablehlo_add = BUILTIN_OPERATORS.index("STABLEHLO_ADD")

    def patch(model, schema):
        model.operatorCodes[0].deprecatedBuiltinCode = 127  # PLACEHOLDER_FOR_GREATER_OP_CODES
        model.operatorCodes[0].builtinCode = stablehlo_add
        model.operatorCodes[1].deprecatedBuiltinCode = schema.BuiltinOperator.SOFTMAX  # old-style file
        model.operatorCodes[1].builtinCode = 0

    out = tmp_path / "patched.tflite"
    out.write_bytes(_patched_model(test_models["float32"], patch))
    names = [c.name for c in read_model(out).operator_codes]
    assert names[0] == "STABLEHLO_ADD"
    assert names[1] == "SOFTMAX"


def test_corrupted_bytes_never_crash_the_reader(test_models):
    """Random byte changes anywhere in a real model: a clean read or an InputError, nothing else."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    data = test_models["float32"].read_bytes()

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=8))
    def check(changes):
        buf = bytearray(data)
        for pos, value in changes:
            buf[pos] = value
        try:
            info = read_model_bytes(bytes(buf), name="corrupt")
        except InputError as exc:
            assert "corrupt" in str(exc)
        else:
            assert info.bytes == len(buf)

    check()
