"""controller.model.compat.check agrees with what the installed runtimes really do with real files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from controller.errors import InputError, UsageError
from controller.model.compat import check, parse_version, tf_equivalent
from tests import modelgen
from tests.test_inspect_reader import _patched_model

# Load + allocate each model in a fresh process (a runtime may crash on a bad file), resizing dynamic
# non-batch dimensions to 12 the way a job with --input-shape would.
_LOADER = r"""
import json, sys
import numpy as np
kind = sys.argv[1]
if kind == "tflite-runtime":
    from tflite_runtime.interpreter import Interpreter
else:
    from ai_edge_litert.interpreter import Interpreter
result = {}
for path in sys.argv[2:]:
    try:
        it = Interpreter(model_path=path)
        for d in it.get_input_details():
            sig = list(d["shape_signature"])
            if any(s < 0 for s in sig[1:]):
                it.resize_tensor_input(d["index"], [1] + [12 if s < 0 else s for s in sig[1:]])
        it.allocate_tensors()
        result[path] = True
    except Exception as exc:
        result[path] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
print(json.dumps(result))
"""

RUNTIMES = {"tflite-runtime": "2.14.0", "ai-edge-litert": "2.3.0"}
LOADABLE = [n for n in modelgen.MODELS if n not in ("bad_not_flatbuffer", "bad_truncated")]


@pytest.fixture(scope="module")
def real_loads(test_models):
    """runtime name -> model name -> True or the runtime's error message."""
    out = {}
    for runtime in RUNTIMES:
        paths = [str(test_models[n]) for n in LOADABLE]
        proc = subprocess.run([sys.executable, "-c", _LOADER, runtime, *paths], capture_output=True,
                              text=True, timeout=120, check=True)
        by_path = json.loads(proc.stdout.strip().splitlines()[-1])
        out[runtime] = {n: by_path[str(test_models[n])] for n in LOADABLE}
    return out


def test_installed_runtime_versions_are_the_ones_the_table_is_checked_against():
    from importlib.metadata import version

    assert version("tflite-runtime") == RUNTIMES["tflite-runtime"]
    assert version("ai-edge-litert") == RUNTIMES["ai-edge-litert"]


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
@pytest.mark.parametrize("name", LOADABLE)
def test_check_agrees_with_a_real_load(test_models, real_loads, runtime, name):
    verdict = check(test_models[name], runtime, RUNTIMES[runtime])
    loaded = real_loads[runtime][name]
    assert verdict.ok == (loaded is True), f"check said {verdict.reasons}, runtime said {loaded}"


def test_fully_connected_v12_is_refused_for_tflite_runtime_214_with_the_fix(test_models):
    verdict = check(test_models["dynamic_fc"], "tflite-runtime", "2.14.0")
    assert not verdict.ok
    assert "FULLY_CONNECTED v12" in verdict.reasons[0]
    assert "--compat-runtime 2.14" in verdict.reasons[0]
    assert verdict.required == "2.17.0"
    assert check(test_models["dynamic_fc"], "tflite-runtime", "2.17").ok


def test_flex_needs_the_tensorflow_runtime(test_models):
    for runtime, version in RUNTIMES.items():
        verdict = check(test_models["bad_flex_op"], runtime, version)
        assert not verdict.ok and "FlexCumprod" in verdict.reasons[0] and "'tensorflow'" in verdict.reasons[0]
    assert check(test_models["bad_flex_op"], "tensorflow", "2.21.0").ok


def test_custom_op_is_named(test_models):
    verdict = check(test_models["bad_custom_op"], "ai-edge-litert", "2.3.0")
    assert not verdict.ok and "'Cumprod'" in verdict.reasons[0]


def test_dynamic_length_is_a_warning_not_a_refusal(test_models):
    verdict = check(test_models["dynamic_length"], "tflite-runtime", "2.14.0")
    assert verdict.ok
    assert len(verdict.warnings) == 1 and "'seq'" in verdict.warnings[0]
    assert "--input-shape seq=" in verdict.warnings[0]
    assert check(test_models["dynamic_batch"], "tflite-runtime", "2.14.0").warnings == []


def test_op_version_newer_than_the_table(test_models, tmp_path):
    def patch(model, schema):
        for code in model.operatorCodes:
            if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.CONV_2D:
                code.version = 99

    path = tmp_path / "conv_v99.tflite"
    path.write_bytes(_patched_model(test_models["float32"], patch))
    old = check(path, "tflite-runtime", "2.14.0")
    assert not old.ok and "CONV_2D v99" in old.reasons[0]
    new = check(path, "ai-edge-litert", "2.3.0")  # newer than the table: a warning, not a refusal
    assert new.ok and "CONV_2D v99" in new.warnings[0]


def test_litert_versions_map_to_tf_releases():
    assert tf_equivalent("ai-edge-litert", "1.0.1") == (2, 18, 0)
    assert tf_equivalent("ai-edge-litert", "1.2.0") == (2, 19, 0)
    assert tf_equivalent("ai-edge-litert", "2.3.0") == (2, 21, 0)
    assert tf_equivalent("ai-edge-litert", "7.0") == (2, 21, 0)
    assert tf_equivalent("tflite-runtime", "2.14") == (2, 14, 0)
    assert parse_version("2.16.0rc1") == (2, 16, 0)


def test_bad_arguments(test_models):
    with pytest.raises(UsageError, match="unknown runtime"):
        check(test_models["float32"], "onnxruntime", "1.0")
    with pytest.raises(UsageError, match="not a version"):
        check(test_models["float32"], "tflite-runtime", "latest")
    with pytest.raises(InputError):
        check(test_models["bad_truncated"], "tflite-runtime", "2.14.0")
