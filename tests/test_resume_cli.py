"""``run --resume`` and ``load_results`` on folders that are not finished runs: clear usage errors."""

from __future__ import annotations

import json

import pytest

from controller.cli import main
from controller.errors import ExitCode, InputError
from controller.fleet.store import load_results


def test_load_results_on_an_unfinished_run_names_the_fix(tmp_path):
    """Before: 'not a run folder' for a folder whose controller was killed before writing the tables."""
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "r", "state": "running"}))
    with pytest.raises(InputError, match=rf"{tmp_path} is an unfinished run.*edgebench run --resume {tmp_path}"):
        load_results(str(tmp_path))
    with pytest.raises(InputError, match="not a run folder"):
        load_results(str(tmp_path / "nothing"))


def test_resume_needs_a_run_folder_and_no_model(tmp_path, test_models, capsys):
    devices = tmp_path / "devices.yaml"
    devices.write_text(f"devices:\n  - name: here\n    transport: local\n    workdir: {tmp_path}/w\n")
    assert main(["run", "--resume", str(tmp_path / "nope"), "--devices", str(devices)]) == ExitCode.USAGE
    assert "is not a run folder" in capsys.readouterr().err
    assert main(["run", str(test_models["float32"]), "--resume", str(tmp_path), "--devices", str(devices)]) \
        == ExitCode.USAGE
    assert "give no MODEL" in capsys.readouterr().err
    assert main(["run", "--devices", str(devices)]) == ExitCode.USAGE
    assert "at least one MODEL" in capsys.readouterr().err
