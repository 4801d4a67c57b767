"""controller.variants.manifest: write/load round trip, and clear refusals of bad manifests."""

from __future__ import annotations

import json
import shutil

import pytest

from controller.errors import InputError
from controller.model.reader import read_model
from controller.variants import manifest as mf


def _make(tmp_path, test_models):
    variants = {}
    for variant, model in (("fp32", "float32"), ("int8", "int8_io")):
        dest = tmp_path / f"m.{variant}.tflite"
        shutil.copy(test_models[model], dest)
        info = read_model(dest)
        variants[variant] = mf.Variant(
            name=variant, file=dest.name, path=dest, sha256=info.sha256, bytes=info.bytes,
            converter={"name": "tensorflow", "version": "2.21.0"}, options={"io": "int8"},
            calibration={"source": "cal.npy", "samples": 16, "random": False} if variant == "int8" else None,
            inputs=[t.io_dict() for t in info.inputs], outputs=[t.io_dict() for t in info.outputs],
            min_runtime_version=info.min_runtime_version,
        )
    m = mf.Manifest(path=tmp_path / "manifest.json", name="m", created="2026-11-22T01:30:00Z",
                    source={"path": "x.keras", "kind": "keras", "sha256": "0" * 64}, variants=variants,
                    eval={"file": "m.eval.npz", "samples": 10, "labels": True})
    mf.write(m)
    return m


def test_round_trip(tmp_path, test_models):
    written = _make(tmp_path, test_models)
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["manifest_version"] == mf.MANIFEST_VERSION
    assert list(doc["variants"]) == ["fp32", "int8"]
    loaded = mf.load(tmp_path)  # the folder works as well as the file
    assert loaded.to_dict() == written.to_dict()
    assert loaded.variants["int8"].path == tmp_path / "m.int8.tflite"
    assert loaded.variants["int8"].inputs[0]["dtype"] == "int8"
    assert loaded.eval_path == tmp_path / "m.eval.npz"
    assert loaded.verify() == []
    (tmp_path / "m.int8.tflite").write_bytes(b"changed")
    assert "m.int8.tflite" in mf.load(tmp_path / "manifest.json").verify()[0]


def _rewrite(tmp_path, change):
    path = tmp_path / "manifest.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(manifest_version=2), "newer edgebench"),
    (lambda d: d.pop("manifest_version"), "'manifest_version' is missing"),
    (lambda d: d["variants"].update(int4=d["variants"]["fp32"]), "unknown variant"),
    (lambda d: d["variants"]["fp32"].pop("sha256"), "lacks key"),
    (lambda d: d["variants"]["fp32"].update(file="gone.tflite"), "gone.tflite"),
    (lambda d: d.pop("variants"), "missing key 'variants'"),
])
def test_bad_manifests_name_the_file_and_the_problem(tmp_path, test_models, change, message):
    _make(tmp_path, test_models)
    path = _rewrite(tmp_path, change)
    with pytest.raises(InputError, match=message) as err:
        mf.load(path)
    assert str(path) in str(err.value)


def test_not_json_and_missing(tmp_path):
    with pytest.raises(InputError, match="edgebench convert"):
        mf.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(InputError, match="not valid JSON"):
        mf.load(tmp_path)
