"""``edgebench bootstrap``: a bare device gets ``<workdir>/venv`` with a runtime from pushed wheels, and
is then used through that venv. No network but loopback: pip runs with --no-index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.cli import main
from controller.fleet.bootstrap import wheel_fits
from tests.fixtures_fleet import write_inventory

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / "wheels"  # filled by `make test` (Makefile target wheels/.stamp)


@pytest.mark.parametrize(
    "filename, machine, version, fits",
    [
        ("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "x86_64", (3, 11), True),
        ("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "aarch64", (3, 11), False),
        ("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "x86_64", (3, 10), False),
        ("numpy-1.26.4-cp39-cp39-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", "aarch64", (3, 9), True),
        ("tflite_runtime-2.14.0-cp39-cp39-manylinux2014_armv7l.whl", "armv7l", (3, 9), True),
        ("protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl", "x86_64", (3, 12), True),
        ("protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl", "x86_64", (3, 9), False),
        ("flatbuffers-25.12.19-py2.py3-none-any.whl", "aarch64", (3, 9), True),
        ("ai_edge_litert-2.3.0-cp311-cp311-macosx_12_0_arm64.whl", "aarch64", (3, 11), False),
        ("README.txt", "x86_64", (3, 11), False),
    ],
)
def test_wheel_choice_by_arch_and_python(filename, machine, version, fits):
    assert wheel_fits(filename, machine, version) is fits


def test_bootstrap_offline_from_wheels_then_the_device_uses_the_venv(ssh_fleet, tmp_path, capsys):
    assert any(WHEELS.glob("ai_edge_litert-*.whl")), "run `make wheels/.stamp` (make test does) first"
    workdir = tmp_path / "fresh board"
    entry = {k: v for k, v in ssh_fleet.entries[2].items() if k != "python"}  # a bare board: system python3
    entry.update(name="fresh", workdir=str(workdir))
    inventory = write_inventory(tmp_path / "devices.yaml", [entry], defaults={"python": "python3"})
    code = main(["bootstrap", "--devices", str(inventory), "--wheels", str(WHEELS), "--json"])
    (report,) = json.loads(capsys.readouterr().out)
    assert code == 0, report
    venv_python = str(workdir / "venv" / "bin" / "python")
    assert report["ok"] and report["python"] == venv_python
    assert (report["runtime"], report["runtime_version"]) == ("ai-edge-litert", "2.3.0")
    assert any(step.startswith("created venv") for step in report["steps"])
    pushed = sorted(p.name for p in (workdir / "wheels").glob("*.whl"))
    assert pushed and all(wheel_fits(n, "x86_64", (3, 11)) for n in pushed)
    assert report["bytes_pushed"] >= sum((WHEELS / n).stat().st_size for n in pushed)
    # The device now runs the agent with that venv.
    assert main(["devices", "--devices", str(inventory), "--check", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["check"]["python_executable"] == venv_python
    # A second bootstrap finds everything in place and pushes nothing.
    assert main(["bootstrap", "--devices", str(inventory), "--wheels", str(WHEELS), "--json"]) == 0
    (again,) = json.loads(capsys.readouterr().out)
    assert again["bytes_pushed"] == 0 and any("already there" in s for s in again["steps"])


def test_bootstrap_reports_a_missing_wheels_folder(ssh_fleet, tmp_path, capsys):
    inventory = write_inventory(tmp_path / "devices.yaml", [dict(ssh_fleet.entries[2], workdir=str(tmp_path / "w"))])
    assert main(["bootstrap", "--devices", str(inventory), "--wheels", str(tmp_path / "none")]) == 2
    assert "--wheels" in capsys.readouterr().err
