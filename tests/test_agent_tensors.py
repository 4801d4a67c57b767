"""Quantization helpers, input preparation and the model file pre-check (no worker processes)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import modelfile
from agent.errors import JobFailed
from agent.inputs import load_samples, random_samples
from agent.tensors import RANDOM_RANGES, dequantize, quantize


def io(name="x", shape=(1, 4), dtype="float32", scale=None, zero_point=None, index=0):
    return {"name": name, "index": index, "shape": list(shape), "shape_signature": list(shape),
            "dtype": dtype, "scale": scale, "zero_point": zero_point}


# ---- quantize / dequantize -------------------------------------------------------------------------

def test_quantize_rounds_half_away_from_zero_and_clips():
    q = quantize([0.0, 0.25, 0.75, -0.25, -0.75, 100.0, -100.0], 0.5, 3, np.int8)
    assert q.dtype == np.int8
    assert q.tolist() == [3, 4, 5, 2, 1, 127, -128]


def test_uint8_quantize_dequantize_round_trip_is_within_half_a_step():
    x = np.linspace(0, 1, 101, dtype=np.float32)
    scale, zp = 1 / 255, 0
    back = dequantize(quantize(x, scale, zp, np.uint8), scale, zp)
    assert back.dtype == np.float32
    assert np.max(np.abs(back - x)) <= scale / 2 + 1e-7


def test_dequantize_is_scale_times_offset():
    assert dequantize(np.array([-128, 0, 127], np.int8), 0.1, -128).tolist() == pytest.approx([0, 12.8, 25.5])


@pytest.mark.parametrize("scale,dtype", [(0.0, np.int8), (-1.0, np.int8), (float("nan"), np.int8),
                                         (0.1, np.float32)])
def test_quantize_refuses_bad_parameters(scale, dtype):
    with pytest.raises(ValueError):
        quantize([1.0], scale, 0, dtype)


# ---- random inputs ------------------------------------------------------------------------------

def test_random_inputs_are_seeded_and_inside_each_dtype_range():
    ios = [io(f"in_{d}", (2, 50), d, index=i) for i, d in enumerate(RANDOM_RANGES)]
    a, b, c = random_samples(ios, 3), random_samples(ios, 3), random_samples(ios, 4)
    for x, y, z, spec in zip(a.arrays, b.arrays, c.arrays, ios):
        assert x.shape == (1, 2, 50) and x.dtype == np.dtype(spec["dtype"])
        assert np.array_equal(x, y)
        assert not np.array_equal(x, z)
        low, high = RANDOM_RANGES[spec["dtype"]]
        assert x.astype(np.float64).min() >= low and x.astype(np.float64).max() <= high
    booleans = a.arrays[list(RANDOM_RANGES).index("bool")]
    assert booleans.any() and not booleans.all()


def test_random_inputs_refuse_strings():
    with pytest.raises(JobFailed) as err:
        random_samples([io("text", (1,), "str")], 0)
    assert err.value.kind == "bad_inputs" and "--inputs" in str(err.value)


# ---- inputs from files -----------------------------------------------------------------------------

def test_float_data_is_quantized_for_an_int8_input(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.array([[0.0, 0.5, 1.0, 2.0]], np.float32))
    samples = load_samples(str(path), [io("x", (1, 4), "int8", scale=1 / 127, zero_point=-1)])
    assert samples.count == 1 and not samples.stacked
    assert samples.arrays[0].dtype == np.int8
    assert samples.arrays[0][0].tolist() == [[-1, 63, 126, 127]]  # round(x*127) - 1, clipped


def test_npz_samples_stack_along_a_new_first_axis_and_match_inputs_by_name(tmp_path):
    path = tmp_path / "two.npz"
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 1, 4)).astype(np.float32), rng.normal(size=(5, 6))
    np.savez(path, b=b, a=a)
    samples = load_samples(str(path), [io("a", (1, 4)), io("b", (1, 6), index=1)])
    assert samples.count == 5 and samples.stacked
    assert samples.arrays[0].shape == (5, 1, 4) and np.array_equal(samples.arrays[0], a)
    assert samples.arrays[1].shape == (5, 1, 6) and samples.arrays[1].dtype == np.float32  # float64 cast


def test_an_eval_set_x_feeds_a_single_input_and_labels_are_ignored(tmp_path):
    path = tmp_path / "eval.npz"
    np.savez(path, x=np.zeros((3, 8, 8, 1), np.float32), y=np.arange(3))
    samples = load_samples(str(path), [io("image", (1, 8, 8, 1))])
    assert samples.count == 3 and samples.arrays[0].shape == (3, 1, 8, 8, 1)


@pytest.mark.parametrize("arrays,expect", [
    ({"a": np.zeros((1, 4)), "c": np.zeros((1, 6))}, "missing ['b']"),
    ({"a": np.zeros((1, 5)), "b": np.zeros((1, 6))}, "has shape [1, 5]"),
    ({"a": np.zeros((2, 1, 4)), "b": np.zeros((3, 1, 6))}, "different sample counts"),
])
def test_mismatched_input_files_name_the_problem(tmp_path, arrays, expect):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(JobFailed) as err:
        load_samples(str(path), [io("a", (1, 4)), io("b", (1, 6), index=1)])
    assert err.value.kind == "bad_inputs"
    assert expect in str(err.value) and str(path) in str(err.value)


def test_non_integral_data_for_an_integer_input_is_refused(tmp_path):
    path = tmp_path / "ids.npy"
    np.save(path, np.array([[1.5, 2, 3, 4]]))
    with pytest.raises(JobFailed, match="do not fit"):
        load_samples(str(path), [io("ids", (1, 4), "int32")])


def test_an_unreadable_inputs_file_is_a_bad_inputs_error(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not numpy")
    with pytest.raises(JobFailed) as err:
        load_samples(str(path), [io()])
    assert err.value.kind == "bad_inputs"


# ---- model file pre-check ---------------------------------------------------------------------------

def test_good_models_pass_the_precheck_and_custom_ops_are_listed(test_models):
    for name in ("float32", "int8_io", "fp16", "dynamic_fc", "bench_medium"):
        assert modelfile.check(test_models[name]) == []
    assert modelfile.check(test_models["bad_custom_op"]) == ["Cumprod"]
    assert modelfile.check(test_models["bad_flex_op"]) == ["FlexCumprod"]


def test_every_prefix_of_a_model_is_refused_as_truncated(test_models, tmp_path):
    data = test_models["float32"].read_bytes()
    cut = tmp_path / "cut.tflite"
    for n in range(0, len(data), 7):
        cut.write_bytes(data[:n])
        with pytest.raises(JobFailed) as err:
            modelfile.check(cut)
        assert err.value.kind == "not_a_model", n


def test_random_bytes_and_a_missing_file(test_models, tmp_path):
    with pytest.raises(JobFailed, match="TFL3") as err:
        modelfile.check(test_models["bad_not_flatbuffer"])
    assert err.value.kind == "not_a_model"
    with pytest.raises(JobFailed) as err:
        modelfile.check(tmp_path / "nope.tflite")
    assert err.value.kind == "missing_model" and "nope.tflite" in str(err.value)


def test_sha256_matches_hashlib(test_models):
    import hashlib

    path = test_models["fp16"]
    assert modelfile.sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-4, max_value=10.0), st.integers(min_value=-128, max_value=127),
       st.lists(st.floats(min_value=-1.0, max_value=1.0), min_size=1, max_size=20))
def test_int8_round_trip_error_is_at_most_half_a_step_inside_the_range(scale, zero_point, unit):
    low, high = scale * (-128 - zero_point), scale * (127 - zero_point)
    x = np.array([low + (u + 1) / 2 * (high - low) for u in unit])
    back = dequantize(quantize(x, scale, zero_point, np.int8), scale, zero_point)
    # half a quantization step, plus float32's own rounding of the dequantized value
    assert np.all(np.abs(back - x) <= scale / 2 + np.abs(x) * 1e-6 + 1e-6)
