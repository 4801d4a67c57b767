"""``family``: a model family folder as ``edgebench convert`` makes one, from the tiny test models.

Three real variants of one conv net (``convnet.{fp32,fp16,int8}.tflite``; int8 has int8 I/O), a
manifest, and an eval set (``convnet.eval.npz``, :data:`EVAL_SAMPLES` samples) whose labels are the
fp32 model's own predictions, so fp32's top-1 must be exactly 1.0 and its cosine vs itself exactly 1.0.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

EVAL_SAMPLES = 16


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def family(tmp_path_factory, test_models) -> Path:
    """A model family folder: convnet.{fp32,fp16,int8}.tflite + manifest.json + convnet.eval.npz."""
    from ai_edge_litert.interpreter import Interpreter

    folder = tmp_path_factory.mktemp("family")
    variants = {}
    for variant, source in (("fp32", "float32"), ("fp16", "fp16"), ("int8", "int8_io")):
        target = folder / f"convnet.{variant}.tflite"
        shutil.copyfile(test_models[source], target)
        variants[variant] = {"file": target.name, "sha256": sha256(target), "bytes": target.stat().st_size,
                             "converter": {"name": "tensorflow", "version": "test"}, "options": {},
                             "calibration": None, "inputs": [], "outputs": [], "min_runtime_version": None}
    x = np.random.default_rng(3).uniform(0, 1, (EVAL_SAMPLES, 8, 8, 1)).astype(np.float32)
    interpreter = Interpreter(model_path=str(folder / "convnet.fp32.tflite"))
    interpreter.allocate_tensors()
    labels = []
    for sample in x:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample[None])
        interpreter.invoke()
        labels.append(int(np.argmax(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))))
    np.savez(folder / "convnet.eval.npz", x=x, y=np.array(labels, dtype=np.int64))
    manifest = {"manifest_version": 1, "name": "convnet", "created": "2026-11-22T00:00:00Z",
                "source": {"path": "modelgen", "kind": "tflite", "sha256": variants["fp32"]["sha256"]},
                "eval": {"file": "convnet.eval.npz", "samples": EVAL_SAMPLES, "labels": True},
                "variants": variants}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder
