"""One exit-code table (controller.errors.ExitCode, decided by controller.fleet.group) for every fleet
command: the same fleet situations give the same code from `run`, `devices --check` and `bootstrap`."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from controller.cli import EXIT_TEXT, epilog, main
from controller.errors import ExitCode
from tests.fixtures_fleet import DEVICE_PYTHON, free_port, write_inventory

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "demo" / "demo.int8.tflite"
FAST = ["--runs", "1", "--warmup", "0", "--min-seconds", "0", "--warmup-min-seconds", "0", "--no-eval"]


def _local(tmp_path: Path, name: str = "here") -> dict:
    return {"name": name, "transport": "local", "python": DEVICE_PYTHON, "workdir": str(tmp_path / f"{name} work")}


def _dead(tmp_path: Path, name: str = "gone") -> dict:
    """An SSH device on a loopback port where nothing listens: refused at once."""
    return {"name": name, "host": "127.0.0.1", "port": free_port(), "user": "root", "connect_timeout": 3,
            "known_hosts": str(tmp_path / "known_hosts"), "workdir": "/tmp/never"}


def _code(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


FLEETS = {
    "all ok": (lambda t: [_local(t)], ExitCode.OK),
    "one unreachable": (lambda t: [_local(t), _dead(t)], ExitCode.PARTIAL),
    "none reachable": (lambda t: [_dead(t), _dead(t, "gone-too")], ExitCode.NO_DEVICE),
}


# bootstrap on a reachable local device would build a venv here (tests/test_bootstrap.py does that once);
# its reached-but-failed cases are below
CASES = [(f, c) for f in FLEETS for c in ("run", "devices --check")] + [("none reachable", "bootstrap")]


@pytest.mark.parametrize(("fleet", "command"), CASES)
def test_the_same_fleet_gives_the_same_exit_code_from_every_command(tmp_path, fleet, command):
    make, expected = FLEETS[fleet]
    inventory = write_inventory(tmp_path / "devices.yaml", make(tmp_path))
    argv = {"run": ["run", str(MODEL), *FAST, "--out", str(tmp_path / "out")],
            "devices --check": ["devices", "--check", "--timeout", "60"],
            "bootstrap": ["bootstrap"]}[command]
    assert _code([*argv, "--devices", str(inventory)]) == expected


def test_bootstrap_reached_but_failed_is_partial_not_no_device(tmp_path):
    """Every device failed, but each was reached (no wheel fits it): that is 1, not 3."""
    inventory = write_inventory(tmp_path / "devices.yaml", [_local(tmp_path), _local(tmp_path, "there")])
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "foo-1.0-cp311-cp311-win_amd64.whl").write_bytes(b"not for linux")
    assert _code(["bootstrap", "--devices", str(inventory), "--wheels", str(tmp_path / "wheels")]) == ExitCode.PARTIAL
    both = [_local(tmp_path), _dead(tmp_path)]
    write_inventory(tmp_path / "devices.yaml", both)
    assert _code(["bootstrap", "--devices", str(inventory), "--wheels", str(tmp_path / "wheels")]) == ExitCode.PARTIAL


def test_usage_errors_are_2_before_any_device_is_contacted(tmp_path):
    inventory = write_inventory(tmp_path / "devices.yaml", [_dead(tmp_path)])
    for argv in (["run", str(tmp_path / "missing.tflite")], ["run", str(MODEL), "--runs", "0"],
                 ["devices", "--device", "nobody"], ["bootstrap", "--wheels", str(tmp_path / "no-such-dir")]):
        assert _code([*argv, "--devices", str(inventory)]) == ExitCode.USAGE, argv


def test_help_lists_every_exit_code_from_the_enum():
    text = epilog()
    assert set(EXIT_TEXT) == set(ExitCode)
    for code in ExitCode:
        assert f"  {int(code):<4}{EXIT_TEXT[code]}" in text


def test_the_process_entry_point_passes_the_code_and_flushes_everything(tmp_path):
    """`python -m controller` / the `edgebench` script leave through os._exit (pyarrow's teardown can abort
    a finished process, see controller.cli.entry): the exit code is main's, argparse's exits keep theirs,
    and buffered output written just before the end reaches a pipe in full."""
    import json
    import os
    import subprocess
    import sys

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "controller", *argv], capture_output=True, text=True,
                              timeout=120, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False)

    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("edgebench ")
    usage = cli("run", "--runs", "many")  # argparse's own error exit
    assert usage.returncode == 2 and "usage: edgebench run" in usage.stderr and "--runs" in usage.stderr
    missing = cli("devices", "--devices", str(tmp_path / "nope.yaml"), "--json")
    assert missing.returncode == ExitCode.USAGE and "nope.yaml" in missing.stderr
    assert "usage:" not in missing.stderr  # the message, not argparse's help
    inventory = write_inventory(tmp_path / "devices.yaml", [_local(tmp_path, f"dev-{i}") for i in range(300)])
    listed = cli("devices", "--devices", str(inventory), "--json")  # ~100 KB of JSON through a pipe
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout) > 30_000 and len(json.loads(listed.stdout)) == 300
