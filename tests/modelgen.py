"""Tiny real .tflite models for the tests and benchmarks, made with the real TensorFlow converter.

``python tests/modelgen.py OUTDIR`` writes every model of :data:`MODELS` into OUTDIR plus
``models.json`` (name -> file and what the model is for). The ``test_models`` fixture in
``tests/conftest.py`` runs this once per source hash into ``build/test-models/<hash>/`` (in a
subprocess, so the test process never imports TensorFlow).

Every model is deterministic (seeded weights). Good models are small enough to convert in well under a
second each; the whole set takes ~15 s, most of it TensorFlow's import.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_CACHE = Path(__file__).resolve().parent.parent / "build" / "test-models"

# name -> (builder, one-line purpose). Filled by the @model decorator below.
MODELS: dict[str, Callable[[], bytes]] = {}
PURPOSE: dict[str, str] = {}

# Names of the models that a TFLite runtime must refuse (status "error"), with the error.kind expected.
BAD_MODELS = {
    "bad_not_flatbuffer": "not_a_model",
    "bad_truncated": "not_a_model",
    "bad_custom_op": "unresolved_op",
    "bad_flex_op": "flex_op",
}


def model(purpose: str) -> Callable[[Callable[[], bytes]], Callable[[], bytes]]:
    def register(fn: Callable[[], bytes]) -> Callable[[], bytes]:
        MODELS[fn.__name__] = fn
        PURPOSE[fn.__name__] = purpose
        return fn

    return register


def _tf():
    import tensorflow as tf

    tf.random.set_seed(0)
    return tf


def _weights(shape: list[int], seed: int, scale: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


class _ConvNet:
    """conv 3x3 -> relu -> conv 3x3 (stride 2) -> relu6 -> mean pool -> dense -> softmax on 8x8x1."""

    def __init__(self, tf):
        self.tf = tf
        self.k1 = tf.constant(_weights([3, 3, 1, 8], 1))
        self.b1 = tf.constant(_weights([8], 2, 0.1))
        self.k2 = tf.constant(_weights([3, 3, 8, 16], 3))
        self.b2 = tf.constant(_weights([16], 4, 0.1))
        self.w = tf.constant(_weights([16, 10], 5))
        self.b = tf.constant(_weights([10], 6, 0.1))

    def __call__(self, x):
        tf = self.tf
        y = tf.nn.relu(tf.nn.conv2d(x, self.k1, 1, "SAME") + self.b1)
        y = tf.nn.relu6(tf.nn.conv2d(y, self.k2, 2, "SAME") + self.b2)
        y = tf.reduce_mean(y, axis=[1, 2])
        return tf.nn.softmax(tf.matmul(y, self.w) + self.b)


def _convnet_fn():
    tf = _tf()
    net = _ConvNet(tf)
    fn = tf.function(net, input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32, name="image")])
    return tf, fn.get_concrete_function()


def _convert(tf, concrete, **options) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    for key, value in options.items():
        setattr(converter, key, value)
    return converter.convert()


def _representative(shape: list[int], seed: int = 7, count: int = 16):
    rng = np.random.default_rng(seed)

    def gen():
        for _ in range(count):
            yield [rng.uniform(0.0, 1.0, shape).astype(np.float32)]

    return gen


@model("float32 conv net (conv, relu, relu6, mean, fully-connected, softmax), input image[1,8,8,1]")
def float32() -> bytes:
    tf, fn = _convnet_fn()
    return _convert(tf, fn)


@model("full-integer int8 conv net with int8 input and output (scale/zero_point set)")
def int8_io() -> bytes:
    tf, fn = _convnet_fn()
    return _convert(
        tf, fn, optimizations=[tf.lite.Optimize.DEFAULT],
        representative_dataset=_representative([1, 8, 8, 1]),
        target_spec=_int8_spec(tf), inference_input_type=tf.int8, inference_output_type=tf.int8,
    )


@model("full-integer conv net with uint8 input and output")
def uint8_io() -> bytes:
    tf, fn = _convnet_fn()
    return _convert(
        tf, fn, optimizations=[tf.lite.Optimize.DEFAULT],
        representative_dataset=_representative([1, 8, 8, 1]),
        target_spec=_int8_spec(tf), inference_input_type=tf.uint8, inference_output_type=tf.uint8,
    )


def _int8_spec(tf):
    spec = tf.lite.TargetSpec()
    spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return spec


@model("conv net with float16 weights (DEQUANTIZE ops), float32 I/O")
def fp16() -> bytes:
    tf, fn = _convnet_fn()
    spec = tf.lite.TargetSpec()
    spec.supported_types = [tf.float16]
    return _convert(tf, fn, optimizations=[tf.lite.Optimize.DEFAULT], target_spec=spec)


@model("dynamic-range conv net: TF 2.21 emits FULLY_CONNECTED v12, too new for tflite-runtime 2.14")
def dynamic_fc() -> bytes:
    tf = _tf()
    w1 = tf.constant(_weights([64, 128], 11))
    w2 = tf.constant(_weights([128, 32], 12))

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32, name="features")])
    def fn(x):
        return tf.matmul(tf.nn.relu(tf.matmul(x, w1)), w2)

    return _convert(tf, fn.get_concrete_function(), optimizations=[tf.lite.Optimize.DEFAULT])


@model("dynamic-range conv-only model (hybrid CONV_2D) that tflite-runtime 2.14 loads")
def dynamic_conv() -> bytes:
    tf = _tf()
    k1 = tf.constant(_weights([3, 3, 4, 32], 13))
    k2 = tf.constant(_weights([3, 3, 32, 32], 14))

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 4], tf.float32, name="image")])
    def fn(x):
        y = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME"))
        return tf.nn.conv2d(y, k2, 1, "SAME")

    return _convert(tf, fn.get_concrete_function(), optimizations=[tf.lite.Optimize.DEFAULT])


@model("two float32 inputs 'a'[1,4] and 'b'[1,6] -> one output")
def two_inputs() -> bytes:
    tf = _tf()
    wa = tf.constant(_weights([4, 3], 21))
    wb = tf.constant(_weights([6, 3], 22))

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="a"),
                                  tf.TensorSpec([1, 6], tf.float32, name="b")])
    def fn(a, b):
        return tf.tanh(tf.matmul(a, wa) + tf.matmul(b, wb))

    return _convert(tf, fn.get_concrete_function())


@model("one float32 input -> two outputs 'logits'[1,5] and 'embedding'[1,3]")
def two_outputs() -> bytes:
    tf = _tf()
    w1 = tf.constant(_weights([6, 5], 31))
    w2 = tf.constant(_weights([6, 3], 32))

    @tf.function(input_signature=[tf.TensorSpec([1, 6], tf.float32, name="x")])
    def fn(x):
        return {"logits": tf.matmul(x, w1), "embedding": tf.sigmoid(tf.matmul(x, w2))}

    return _convert(tf, fn.get_concrete_function())


@model("dynamic batch: input 'x' signature [-1,16] (allocates with the default batch 1)")
def dynamic_batch() -> bytes:
    tf = _tf()
    w = tf.constant(_weights([16, 4], 41))

    @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
    def fn(x):
        return tf.nn.relu(tf.matmul(x, w))

    return _convert(tf, fn.get_concrete_function())


@model("dynamic length: input 'seq' signature [1,-1,4] with a VALID conv1d of width 5: cannot "
       "allocate until resized (e.g. seq=1,12,4)")
def dynamic_length() -> bytes:
    tf = _tf()
    k = tf.constant(_weights([5, 4, 6], 51))

    @tf.function(input_signature=[tf.TensorSpec([1, None, 4], tf.float32, name="seq")])
    def fn(x):
        return tf.reduce_max(tf.nn.conv1d(x, k, 1, "VALID"), axis=1)

    return _convert(tf, fn.get_concrete_function())


@model("integer and bool inputs: ids int32 (gather), big int64, small int16, mask bool -> float32")
def int_inputs() -> bytes:
    tf = _tf()
    table = tf.constant(_weights([10, 3], 61))

    @tf.function(input_signature=[
        tf.TensorSpec([1, 4], tf.int32, name="ids"),
        tf.TensorSpec([1, 4], tf.int64, name="big"),
        tf.TensorSpec([1, 4], tf.int16, name="small"),
        tf.TensorSpec([1, 4], tf.bool, name="mask"),
    ])
    def fn(ids, big, small, mask):
        emb = tf.gather(table, tf.clip_by_value(ids, 0, 9))  # [1, 4, 3]
        extra = tf.cast(big, tf.float32) * 1e-3 + tf.cast(small, tf.float32) * 1e-2
        gate = tf.cast(mask, tf.float32)
        return tf.reduce_sum(emb, axis=2) * gate + extra

    return _convert(tf, fn.get_concrete_function())


@model("benchmark 'tiny': ~50 us per inference on a 2-core x86 box (float32 conv 16x16x16 -> 40)")
def bench_tiny() -> bytes:
    tf = _tf()
    k = tf.constant(_weights([3, 3, 16, 40], 71))

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 16], tf.float32, name="x")])
    def fn(x):
        return tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME"))

    return _convert(tf, fn.get_concrete_function())


@model("benchmark 'medium': ~1-3 ms per inference on a 2-core x86 box (float32 convs on 64x64)")
def bench_medium() -> bytes:
    tf = _tf()
    k1 = tf.constant(_weights([3, 3, 8, 32], 81))
    k2 = tf.constant(_weights([3, 3, 32, 32], 82))
    k3 = tf.constant(_weights([3, 3, 32, 32], 83))

    @tf.function(input_signature=[tf.TensorSpec([1, 64, 64, 8], tf.float32, name="x")])
    def fn(x):
        y = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME"))
        y = tf.nn.relu(tf.nn.conv2d(y, k2, 1, "SAME"))
        y = tf.nn.relu(tf.nn.conv2d(y, k3, 1, "SAME"))
        return tf.reduce_mean(y, axis=[1, 2])

    return _convert(tf, fn.get_concrete_function())


@model("XNNPACK leaves ops on the CPU: conv -> LOCAL_RESPONSE_NORMALIZATION -> conv -> CUMSUM -> mean on "
       "32x32x8 (XNNPACK takes the convs and the mean, not LRN or CUMSUM); tens of us per op")
def cpu_fallback() -> bytes:
    tf = _tf()
    k1 = tf.constant(_weights([3, 3, 8, 16], 101))
    k2 = tf.constant(_weights([3, 3, 16, 16], 102))

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 8], tf.float32, name="image")])
    def fn(x):
        y = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME"))
        y = tf.nn.local_response_normalization(y, depth_radius=2)
        y = tf.nn.relu(tf.nn.conv2d(y, k2, 1, "SAME"))
        y = tf.math.cumsum(y, axis=3)
        return tf.reduce_mean(y, axis=[1, 2])

    return _convert(tf, fn.get_concrete_function())


@model("not a flatbuffer: 4 KiB of seeded random bytes")
def bad_not_flatbuffer() -> bytes:
    return np.random.default_rng(91).integers(0, 256, 4096, dtype=np.uint8).tobytes()


@model("truncated: the first half of the float32 model")
def bad_truncated() -> bytes:
    data = float32()
    return data[: len(data) // 2]


@model("unresolved custom op: a TF op (Cumprod) converted with allow_custom_ops=True")
def bad_custom_op() -> bytes:
    tf = _tf()

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32, name="x")])
    def fn(x):
        return tf.math.cumprod(x, axis=1) + 1.0

    return _convert(tf, fn.get_concrete_function(), allow_custom_ops=True)


@model("Select-TF (Flex) op: Cumprod via SELECT_TF_OPS, needs the flex delegate")
def bad_flex_op() -> bytes:
    tf = _tf()

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32, name="x")])
    def fn(x):
        return tf.math.cumprod(x, axis=1) + 1.0

    spec = tf.lite.TargetSpec()
    spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    return _convert(tf, fn.get_concrete_function(), target_spec=spec)


def source_hash() -> str:
    """First 16 hex digits of the sha256 of this file: the cache key of generated models."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def ensure_models(cache_root: Path = DEFAULT_CACHE, timeout: float = 600.0) -> dict[str, Path]:
    """Return name -> path of every model, generating them once per source hash under ``cache_root``.

    Generation runs ``python tests/modelgen.py`` in a subprocess (TensorFlow never enters the caller)
    into a temporary folder that is renamed into place, under an flock so parallel test runs wait for
    one generator instead of racing. Raises RuntimeError (with the generator's stderr tail) when the
    generator fails or passes ``timeout`` seconds.
    """
    import fcntl
    import subprocess

    target = cache_root / source_hash()
    index_file = target / "models.json"
    if not index_file.exists():
        cache_root.mkdir(parents=True, exist_ok=True)
        with open(cache_root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held while generating; the generator has a deadline
            if not index_file.exists():
                tmp = cache_root / f"{target.name}.tmp-{os.getpid()}"
                try:
                    proc = subprocess.run([sys.executable, __file__, str(tmp)], capture_output=True,
                                          text=True, timeout=timeout, check=False)
                except subprocess.TimeoutExpired as exc:
                    raise RuntimeError(f"model generator passed its {timeout:.0f} s deadline") from exc
                if proc.returncode != 0:
                    raise RuntimeError(f"model generator failed (exit {proc.returncode}):\n"
                                       f"{proc.stderr[-3000:]}")
                os.rename(tmp, target)
    index = json.loads(index_file.read_text())
    return {name: target / entry["file"] for name, entry in sorted(index.items())}


def generate(out_dir: Path, names: list[str] | None = None) -> dict[str, dict]:
    """Write the models named (default: all) into ``out_dir`` and ``models.json``; return the index."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = {}
    for name in names or list(MODELS):
        data = MODELS[name]()
        path = out_dir / f"{name}.tflite"
        path.write_bytes(data)
        index[name] = {"file": path.name, "bytes": len(data), "purpose": PURPOSE[name],
                       "bad": BAD_MODELS.get(name)}
    (out_dir / "models.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    return index


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.stderr.write("usage: python tests/modelgen.py OUTDIR [NAME ...]\n")
        raise SystemExit(2)
    generate(Path(sys.argv[1]), sys.argv[2:] or None)
