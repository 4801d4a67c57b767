"""The aarch64 path for real: an emulated arm64 board (tests/fixtures_arm.py) reached over SSH.

Its python3 and its TFLite runtime (tflite-runtime 2.14, the aarch64 wheel) are aarch64 binaries run
by qemu-user, so what is tested is the path a Raspberry Pi / Jetson class board takes: the agent
zipapp, the runtime the agent picks, result documents that say ``aarch64``, offline bootstrap from
aarch64 wheels pushed by the controller, and what a board without a runtime says on first contact.
Timings under emulation mean nothing and are never asserted. ``pytest -m arm`` runs these alone.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from controller.cli import main
from controller.errors import ExitCode
from controller.fleet.bootstrap import wheel_fits
from tests.fixtures_family import sha256
from tests.fixtures_fleet import write_inventory

pytestmark = [pytest.mark.arm, pytest.mark.slow]

FAST = ["--runs", "3", "--warmup", "1", "--min-seconds", "0", "--warmup-min-seconds", "0"]
EM_AARCH64 = 183  # ELF e_machine of aarch64


def run_json(*argv: str) -> tuple[int, dict]:
    """Run ``edgebench run ... --json``; return (exit code, the JSON document it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", *argv, "--json"])
    return code, json.loads(out.getvalue())


def elf_machine(path: Path) -> int:
    """e_machine of the ELF file at ``path`` (symlinks followed inside the rootfs by the caller)."""
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


def test_the_boards_python_is_an_aarch64_binary(arm_board):
    rootfs = arm_board.tree.rootfs
    python = rootfs / "usr/bin/python3.11"
    assert elf_machine(python) == EM_AARCH64
    (so,) = (rootfs / "opt/tflite-venv/lib/python3.11/site-packages/tflite_runtime").glob("_pywrap*.so")
    assert elf_machine(so) == EM_AARCH64


def test_run_measures_the_family_on_the_aarch64_board(arm_board, family, tmp_path):
    entry = arm_board.ready_entry("arm-board")
    inventory = write_inventory(tmp_path / "devices.yaml", [entry])
    code, doc = run_json(str(family), "--devices", str(inventory), "--out", str(tmp_path / "out"), *FAST)
    status = doc["devices"]["arm-board"]
    assert code == 0, status
    assert status["state"] == "done" and (status["jobs_done"], status["jobs_failed"]) == (3, 0)
    assert (status["runtime"], status["runtime_version"]) == ("tflite-runtime", "2.14.0")
    assert status["python"] == arm_board.tree.runtime_python
    run_dir = Path(doc["run_dir"])
    results = pd.read_parquet(run_dir / "results.parquet")
    assert len(results) == 3 and set(results["status"]) == {"ok"}
    assert set(results["arch"]) == {"aarch64"} and set(results["runtime"]) == {"tflite-runtime"}
    assert (results["count"] >= 3).all() and (results["p50_ms"] > 0).all()
    # The labels are the host's (x86_64, ai-edge-litert) fp32 predictions: the aarch64 runtime agrees.
    rows = {r["variant"]: r for r in results.to_dict("records")}
    assert rows["fp32"]["top1"] == 1.0 and rows["fp32"]["cosine_vs_fp32"] == pytest.approx(1.0)
    assert rows["fp16"]["cosine_vs_fp32"] > 0.99 and 0.5 < rows["int8"]["cosine_vs_fp32"] <= 1.0
    documents = sorted((run_dir / "results" / "arm-board").glob("*.json"))
    assert len(documents) == 3
    for path in documents:
        result = json.loads(path.read_text())
        assert result["status"] == "ok" and result["env"]["arch"] == "aarch64"
        assert result["env"]["python"].startswith("3.11.")
        assert (result["runtime"]["name"], result["runtime"]["version"]) == ("tflite-runtime", "2.14.0")
    # The models really went to the board: content-addressed files in its workdir inside the rootfs.
    cached = sorted(p.name for p in (arm_board.host_path(entry["workdir"]) / "models").glob("*.tflite"))
    assert cached == sorted(f"{sha256(p)}.tflite" for p in family.glob("*.tflite"))


def test_a_fresh_board_says_what_is_missing_and_names_the_fix(arm_board, family, tmp_path, capsys):
    inventory = write_inventory(tmp_path / "devices.yaml", [arm_board.fresh_entry("arm-fresh")])
    code, doc = run_json(str(family / "convnet.fp32.tflite"), "--devices", str(inventory),
                         "--out", str(tmp_path / "out"), *FAST)
    status = doc["devices"]["arm-fresh"]
    assert code == ExitCode.PARTIAL and status["state"] == "failed" and status["kind"] == "runtime"
    for needed in ("tflite-runtime: not installed", "ai-edge-litert: not installed", "numpy",
                   "python3", "`edgebench bootstrap --device arm-fresh`"):
        assert needed in status["reason"], (needed, status["reason"])
    (row,) = doc["results"]
    assert row["status"] == "not_run" and row["error"] == status["reason"]
    # `devices --check` reaches the board and says the same.
    assert main(["devices", "--devices", str(inventory), "--check", "--json"]) == ExitCode.PARTIAL
    (check,) = json.loads(capsys.readouterr().out)
    assert check["check"]["kind"] == "runtime" and check["check"]["reason"] == status["reason"]


def test_bootstrap_from_aarch64_wheels_then_a_run_works(arm_board, family, tmp_path, capsys):
    wheels = sorted(p.name for p in arm_board.wheels.glob("*.whl"))
    assert any(n.startswith("tflite_runtime-2.14.0-") for n in wheels), "run `make arm-rootfs` first"
    # The folder also holds wheels for this host: bootstrap must push only the ones that fit aarch64.
    mixed = tmp_path / "wheels"
    mixed.mkdir()
    for source in [*arm_board.wheels.glob("*.whl"), *(Path(__file__).parent.parent / "wheels").glob("numpy-*.whl")]:
        (mixed / source.name).symlink_to(source)
    assert any("x86_64" in p.name for p in mixed.iterdir()), "run `make wheels/.stamp` (make test does) first"
    entry = arm_board.fresh_entry("arm-new", runtime="tflite-runtime")
    inventory = write_inventory(tmp_path / "devices.yaml", [entry])
    code = main(["bootstrap", "--devices", str(inventory), "--wheels", str(mixed), "--json"])
    (report,) = json.loads(capsys.readouterr().out)
    assert code == 0, report
    venv_python = f"{entry['workdir']}/venv/bin/python"
    assert report["ok"] and report["python"] == venv_python
    assert (report["runtime"], report["runtime_version"]) == ("tflite-runtime", "2.14.0")
    assert any("on aarch64" in step for step in report["steps"]), report["steps"]
    pushed = sorted(p.name for p in (arm_board.host_path(entry["workdir"]) / "wheels").glob("*.whl"))
    assert pushed == wheels  # the aarch64 ones, all of them, nothing for x86_64
    assert all(wheel_fits(n, "aarch64", (3, 11)) for n in pushed)
    # The board now runs the agent from that venv, and measures.
    code, doc = run_json(str(family / "convnet.int8.tflite"), "--devices", str(inventory),
                         "--out", str(tmp_path / "out"), *FAST)
    status = doc["devices"]["arm-new"]
    assert code == 0, status
    assert status["python"] == venv_python and status["runtime_version"] == "2.14.0"
    (row,) = doc["results"]
    assert row["status"] == "ok" and row["arch"] == "aarch64" and row["runtime"] == "tflite-runtime"
