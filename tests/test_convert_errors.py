"""Bad input to edgebench convert: a clear error naming the file and the fix, exit code 2, nothing
written. These use the fp32 .tflite of the session's Keras family (the ai-edge-quantizer path), so no
TensorFlow is imported here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from controller.cli import main
from controller.variants import manifest as mf


@pytest.fixture()
def fp32(keras_family, tmp_path) -> Path:
    path = tmp_path / "m.tflite"
    shutil.copy(keras_family / "family" / "small.fp32.tflite", path)
    return path


def _convert(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["convert", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir())


def test_missing_src(capsys, tmp_path):
    rc, _, err = _convert(capsys, tmp_path / "nope.keras", "--out", tmp_path / "o")
    assert rc == 2 and "nope.keras does not exist" in err
    _nothing_written(tmp_path / "o")


def test_unknown_kind_and_not_a_model(capsys, tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x01")
    rc, _, err = _convert(capsys, onnx, "--out", tmp_path / "o")
    assert rc == 2 and "m.onnx" in err and "unknown kind of model" in err
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(os.urandom(2048))
    rc, _, err = _convert(capsys, junk, "--out", tmp_path / "o", "--variants", "fp32,fp16")
    assert rc == 2 and "junk.tflite" in err and "not a TFLite model" in err
    folder = tmp_path / "not_saved_model"
    folder.mkdir()
    rc, _, err = _convert(capsys, folder, "--out", tmp_path / "o")
    assert rc == 2 and "saved_model.pb" in err
    _nothing_written(tmp_path / "o")


def test_int8_without_calibration_is_refused_with_the_reason(capsys, fp32, tmp_path):
    rc, _, err = _convert(capsys, fp32, "--out", tmp_path / "o")
    assert rc == 2
    assert "needs calibration data" in err and "--calibration random" in err and "range" in err
    _nothing_written(tmp_path / "o")


def test_calibration_of_the_wrong_shape(capsys, fp32, tmp_path):
    cal = tmp_path / "cal.npy"
    np.save(cal, np.zeros((20, 9, 9, 1), np.float32))
    rc, _, err = _convert(capsys, fp32, "--out", tmp_path / "o", "--calibration", cal)
    assert rc == 2 and str(cal) in err
    assert "[N, 8, 8, 1]" in err and "[9, 9, 1]" in err
    _nothing_written(tmp_path / "o")
    npz = tmp_path / "cal.npz"
    np.savez(npz, images=np.zeros((20, 8, 8, 1), np.float32))
    rc, _, err = _convert(capsys, fp32, "--out", tmp_path / "o", "--calibration", npz)
    assert rc == 2 and "no key 'x'" in err and "images" in err


@pytest.mark.parametrize("labels, message", [
    (np.zeros(7, np.int64), "one per sample"),
    (np.full(20, 12, np.int64), "10 classes"),
    (np.full(20, 0.5), "not integer"),
])
def test_labels_that_do_not_match(capsys, fp32, tmp_path, labels, message):
    ev = tmp_path / "eval.npz"
    np.savez(ev, x=np.zeros((20, 8, 8, 1), np.float32), y=labels)
    rc, _, err = _convert(capsys, fp32, "--out", tmp_path / "o", "--variants", "fp32,fp16", "--eval", ev)
    assert rc == 2 and str(ev) in err and message in err
    _nothing_written(tmp_path / "o")


def test_already_quantized_source_and_io_float(capsys, keras_family, tmp_path):
    int8 = keras_family / "family" / "small.int8.tflite"
    rc, _, err = _convert(capsys, int8, "--out", tmp_path / "o", "--variants", "fp32,fp16")
    assert rc == 2 and "already quantized" in err
    fp32 = keras_family / "family" / "small.fp32.tflite"
    rc, _, err = _convert(capsys, fp32, "--out", tmp_path / "o", "--calibration", "random", "--io", "float")
    assert rc == 2 and "--io float" in err


def test_random_calibration_is_recorded_and_warned_about(capsys, fp32, tmp_path):
    out = tmp_path / "o"
    rc, stdout, err = _convert(capsys, fp32, "--out", out, "--variants", "int8", "--calibration", "random",
                               "--calibration-samples", "8", "--json")
    assert rc == 0
    doc = json.loads(stdout)  # --json: stdout holds the document and nothing else
    assert doc["variants"]["int8"]["calibration"] == {"source": "random", "samples": 8, "random": True,
                                                      "distribution": "uniform[0,1)"}
    assert "random data" in err
    assert mf.load(out).variants["int8"].random_calibration
    rc = main(["inspect", str(out / "m.int8.tflite")])
    assert rc == 0 and "RANDOM" in capsys.readouterr().err


def test_keras_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip")
    proc = subprocess.run([sys.executable, "-m", "controller", "convert", str(bad), "--out",
                           str(tmp_path / "o"), "--variants", "fp32"], check=False, capture_output=True,
                          text=True,
                          timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 2
    assert "bad.keras" in proc.stderr and "not a loadable Keras model" in proc.stderr
    _nothing_written(tmp_path / "o")
