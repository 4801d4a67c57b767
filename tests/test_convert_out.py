"""``convert --out``: an existing file or model folder (issue 11, defect 7). Refused without ``--force``
before anything is converted; with it the folder is replaced and the warnings say what changed. Uses the
fp32 test model (the ai-edge-quantizer path; fp32/fp16 only: no calibration, no TensorFlow)."""

from __future__ import annotations

import json

from controller.cli import main
from controller.errors import ExitCode
from controller.variants import manifest as mf


def convert(capsys, *argv) -> tuple[int, str, str]:
    code = main(["convert", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_an_existing_file_as_out_is_a_usage_error(test_models, tmp_path, capsys):
    """Before: a FileExistsError traceback, exit 1."""
    target = tmp_path / "out.txt"
    target.write_text("mine")
    code, _, err = convert(capsys, test_models["float32"], "--out", target, "--variants", "fp32")
    assert code == ExitCode.USAGE and f"--out {target} exists and is not a folder" in err
    assert target.read_text() == "mine"


def test_an_existing_model_folder_is_refused_without_force_and_left_as_it_was(test_models, tmp_path, capsys):
    """Before: a second convert silently replaced the variants and dropped the manifest's other entries."""
    out = tmp_path / "m"
    assert convert(capsys, test_models["float32"], "--out", out, "--name", "m", "--variants", "fp32,fp16")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = convert(capsys, test_models["float32"], "--out", out, "--name", "m", "--variants", "fp32")
    assert code == ExitCode.USAGE
    assert f"--out {out} already holds a model folder (m.fp16.tflite, m.fp32.tflite, manifest.json)" in err
    assert "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_force_replaces_the_folder_and_says_what_changed(test_models, tmp_path, capsys):
    out = tmp_path / "m"
    assert convert(capsys, test_models["float32"], "--out", out, "--name", "m", "--variants", "fp32,fp16")[0] == 0
    code, stdout, _ = convert(capsys, test_models["float32"], "--out", out, "--name", "m", "--variants", "fp32",
                              "--force", "--json")
    assert code == ExitCode.OK
    assert sorted(mf.load(out).variants) == ["fp32"]
    assert not (out / "m.fp16.tflite").exists()  # the folder holds what its manifest says
    warnings = json.loads(stdout).get("warnings") or []
    assert any("variant fp16 of the old manifest was not made again and was removed" in w for w in warnings), warnings


def test_an_unrelated_folder_is_fine(test_models, tmp_path, capsys):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    assert convert(capsys, test_models["float32"], "--out", out, "--name", "m", "--variants", "fp32")[0] == 0
    assert (out / "notes.txt").read_text() == "x" and (out / "m.fp32.tflite").is_file()
