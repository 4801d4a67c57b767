"""Session fixtures of the convert tests: small Keras models converted for real, once per source hash.

``keras_family``: a subprocess trains a small Keras CNN on the 8x8 digits (seeded, ~1 s), saves it as
``small.keras`` and runs ``edgebench convert``: all four variants with calibration and ``--eval``; the
dynamic variant alone with ``--compat-runtime 2.14``; int8 calibrated on a folder of PNG images; a model
whose int8 variant cannot be made; one whose int8 variant keeps SIN in float; a SavedModel export and a
.h5 of the same model; int8 with --io uint8 / float; an --eval on tflite-runtime 2.14. ``quantized_family``: a second subprocess, which must
never import TensorFlow, runs ``edgebench convert`` on the fp32 .tflite of the first (ai-edge-quantizer
path). Both are cached under ``build/test-convert/<hash>/`` keyed by the sha256 of the scripts and of the
controller modules the conversion uses, so a re-run costs nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "build" / "test-convert"
# Every module whose code shapes the cached results (the converter side, the compat check, the CLI's exit
# codes, and the agent that measures the accuracy rows): an edit to any of them makes a new cache entry.
_SOURCE_DIRS = ("controller", "agent")

# Runs in a fresh interpreter: train, save, convert through the real CLI. Writes results.json.
_KERAS_SCRIPT = r"""
import contextlib, io, json, os, sys
from pathlib import Path
import numpy as np
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras, tensorflow as tf
from sklearn.datasets import load_digits
from controller.cli import main

out = Path(sys.argv[1])
keras.utils.set_random_seed(0)
tf.config.experimental.enable_op_determinism()
d = load_digits()
x = (d.images.astype(np.float32) / 16.0)[..., None]
y = d.target.astype(np.int64)
order = np.random.default_rng(0).permutation(len(x))
train, held = order[:1400], order[1400:]
inp = keras.Input((8, 8, 1), name="image")
h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
h = keras.layers.Flatten()(h)
h = keras.layers.Dense(64, activation="relu")(h)
outp = keras.layers.Dense(10, activation="softmax")(h)
model = keras.Model(inp, outp)
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x[train], y[train], epochs=4, batch_size=32, verbose=0)
model.save(out / "small.keras")
np.save(out / "cal.npy", x[train][:100])
np.savez(out / "eval.npz", x=x[held], y=y[held])

def cli(argv):
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        rc = main(argv)
    return {"rc": rc, "doc": json.loads(buf.getvalue()) if buf.getvalue().strip() else None,
            "stderr": err.getvalue()[-3000:]}

results = {
    "full": cli(["convert", str(out / "small.keras"), "--out", str(out / "family"), "--name", "small",
                 "--calibration", str(out / "cal.npy"), "--eval", str(out / "eval.npz"), "--json"]),
    "compat": cli(["convert", str(out / "small.keras"), "--out", str(out / "compat"), "--name", "small",
                   "--variants", "dynamic", "--compat-runtime", "2.14", "--json"]),
}
images = out / "images"
images.mkdir()
for i in range(30):
    png = tf.io.encode_png(tf.constant((x[train][i] * 255).astype(np.uint8)))
    tf.io.write_file(str(images / f"digit{i:02d}.png"), png)
results["images"] = cli(["convert", str(out / "small.keras"), "--out", str(out / "from_images"), "--name",
                         "small", "--variants", "int8", "--calibration", str(images), "--json"])
model.export(str(out / "saved"))  # a SavedModel folder
results["saved_model"] = cli(["convert", str(out / "saved"), "--out", str(out / "from_saved"), "--variants",
                              "fp32,dynamic", "--json"])
model.save(out / "small.h5")
results["h5"] = cli(["convert", str(out / "small.h5"), "--out", str(out / "from_h5"), "--variants", "fp32",
                     "--json"])
for io_type in ("uint8", "float"):
    results[f"io_{io_type}"] = cli(["convert", str(out / "small.keras"), "--out", str(out / f"io_{io_type}"),
                                    "--variants", "int8", "--io", io_type, "--calibration",
                                    str(out / "cal.npy"), "--json"])
# An int32 input (embedding ids): fp32 converts, int8 cannot be calibrated with float samples.
ids_in = keras.Input((4,), dtype="int32", name="ids")
ids_model = keras.Model(ids_in, keras.layers.Dense(3)(keras.layers.Flatten()(keras.layers.Embedding(10, 5)(ids_in))))
ids_model.save(out / "ids.keras")
results["partial"] = cli(["convert", str(out / "ids.keras"), "--out", str(out / "partial"), "--variants",
                          "fp32,int8", "--calibration", "random", "--json"])
# SIN has no int8 kernel: the converter keeps it in float between DEQUANTIZE and QUANTIZE.
sin_in = keras.Input((8,), name="x")
sin_model = keras.Model(sin_in, keras.layers.Dense(4)(keras.ops.sin(keras.layers.Dense(8)(sin_in))))
sin_model.save(out / "sin.keras")
results["float_fallback"] = cli(["convert", str(out / "sin.keras"), "--out", str(out / "float_fallback"),
                                 "--variants", "int8", "--calibration", "random", "--json"])
# Evaluated with tflite-runtime 2.14: the dynamic variant (FULLY_CONNECTED v12) cannot run there.
results["eval_old_runtime"] = cli(["convert", str(out / "small.keras"), "--out", str(out / "eval_214"),
                                   "--variants", "fp32,dynamic", "--eval", str(out / "eval.npz"),
                                   "--runtime", "tflite-runtime", "--json"])
(out / "results.json").write_text(json.dumps(results))
"""

# Runs in a fresh interpreter that must not import TensorFlow: the ai-edge-quantizer path.
_QUANT_SCRIPT = r"""
import contextlib, io, json, sys
from pathlib import Path
from controller.cli import main

out, src = Path(sys.argv[1]), sys.argv[2]
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = main(["convert", src, "--out", str(out / "family"), "--name", "q", "--calibration",
               str(out / "cal.npy"), "--eval", str(out / "eval.npz"), "--json"])
(out / "results.json").write_text(json.dumps({
    "rc": rc, "doc": json.loads(buf.getvalue()) if rc == 0 else None,
    "tensorflow_imported": any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules),
}))
"""


def _source_hash() -> str:
    digest = hashlib.sha256()
    # The scripts as imported (not as on disk now): an edit during a run cannot mislabel a cache entry.
    digest.update((_KERAS_SCRIPT + _QUANT_SCRIPT).encode())
    for path in sorted(p for d in _SOURCE_DIRS for p in (REPO / d).rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _cached(name: str, make, timeout: float = 600.0) -> Path:
    """Return CACHE/<hash>/<name>, running ``make(tmp_dir)`` once under an flock when it is missing."""
    target = CACHE / _source_hash() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "results.json").is_file():
            tmp = target.parent / f"{name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            make(tmp, timeout)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
    return target


def _run(script: str, args: list[str], timeout: float) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script, *args], check=False, capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(REPO))
    if proc.returncode != 0:
        raise RuntimeError(f"conversion script failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="session")
def keras_family() -> Path:
    """Folder with small.keras, cal.npy, eval.npz, family/ (4 variants + manifest + accuracy.json),
    compat/ (dynamic with --compat-runtime 2.14) and results.json (exit codes + --json documents)."""
    return _cached("keras", lambda tmp, timeout: _run(_KERAS_SCRIPT, [str(tmp)], timeout))


@pytest.fixture(scope="session")
def quantized_family(keras_family) -> Path:
    """The fp32 .tflite of keras_family quantized by ai-edge-quantizer in a process without TensorFlow."""
    def make(tmp: Path, timeout: float) -> None:
        for f in ("cal.npy", "eval.npz"):
            shutil.copy(keras_family / f, tmp / f)
        _run(_QUANT_SCRIPT, [str(tmp), str(keras_family / "family" / "small.fp32.tflite")], timeout)

    return _cached("quantized", make)


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())
