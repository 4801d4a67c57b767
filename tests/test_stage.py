"""The probe and stage commands of the lean round trip, against a real loopback sshd and locally: files
pushed on a command's stdin are sha256-checked before they get their final name, a full disk (a real
small tmpfs) leaves no temp file, and a workdir that cannot be made is named with the fix."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from controller.errors import DeviceError
from controller.fleet.inventory import Device
from controller.fleet.session import DeviceSession
from tests.fixtures_fleet import DEVICE_PYTHON

DEMO_FP32 = Path(__file__).resolve().parent.parent / "models" / "demo" / "demo.fp32.tflite"  # 660 KiB


def device(where: str, ssh_fleet, workdir: Path) -> Device:
    if where == "local":
        return Device(name="here", transport="local", workdir=str(workdir), python=DEVICE_PYTHON)
    entry = ssh_fleet.entries[0]
    return Device(name="board", host=entry["host"], port=entry["port"], user=entry["user"],
                  identity_file=entry["identity_file"], known_hosts=entry["known_hosts"], workdir=str(workdir),
                  python=DEVICE_PYTHON)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_pushed_files_get_their_name_only_when_their_sha256_matches(where, ssh_fleet, test_models, tmp_path):
    session = DeviceSession(device(where, ssh_fleet, tmp_path / "work"), "unused.pyz")
    good, bad = test_models["float32"], test_models["int8_io"]
    try:
        session.open()
        assert session.t.round_trips == 1  # the probe
        models = Path(session.workdir) / "models"
        session.push_verified([(str(good), sha256(good), str(models / "good.tflite"))])
        assert session.t.round_trips == 2
        assert (models / "good.tflite").read_bytes() == good.read_bytes()
        with pytest.raises(DeviceError) as caught:
            session.push_verified([(str(bad), "0" * 64, str(models / "bad.tflite"))])
        assert caught.value.kind == "push" and "sha256 mismatch" in caught.value.reason
        assert sha256(bad) in caught.value.reason  # what arrived, so a corrupted transfer can be told apart
    finally:
        session.close()
    assert sorted(p.name for p in models.iterdir()) == ["good.tflite"]  # no temp file, no bad file
    assert session.status.bytes_pushed == good.stat().st_size + bad.stat().st_size
    assert session.status.round_trips == 3


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_a_disk_that_fills_during_a_push_is_disk_full_and_leaves_no_temp_file(where, ssh_fleet, tiny_disk):
    session = DeviceSession(device(where, ssh_fleet, tiny_disk / "work"), "unused.pyz")
    try:
        session.open()
        target = Path(session.workdir) / "models" / "demo.tflite"
        with pytest.raises(DeviceError) as caught:
            session.push_verified([(str(DEMO_FP32), sha256(DEMO_FP32), str(target))])
    finally:
        session.close()
    assert caught.value.kind == "disk_full"
    assert "disk full" in caught.value.reason and "free space" in caught.value.reason
    assert list(target.parent.iterdir()) == []


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_a_workdir_that_cannot_be_made_is_named_with_the_fix(where, ssh_fleet, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    session = DeviceSession(device(where, ssh_fleet, blocker / "work"), "unused.pyz")
    try:
        with pytest.raises(DeviceError) as caught:
            session.open()
    finally:
        session.close()
    assert caught.value.kind == "workdir"
    assert str(blocker) in caught.value.reason and "workdir" in caught.value.reason


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_the_probe_resolves_home_and_applies_the_one_python_rule(where, ssh_fleet, tmp_path):
    """``~`` in the workdir is the login user's home; the interpreter follows
    :func:`controller.fleet.inventory.resolve_python`: the device's key, else bootstrap's venv when it
    exists there, else the transport's default."""
    import dataclasses
    import os
    import secrets
    import shutil
    import sys

    name = f"edgebench lean {secrets.token_hex(4)}"
    workdir = Path(os.path.expanduser("~")) / name
    base = dataclasses.replace(device(where, ssh_fleet, tmp_path), workdir=f"~/{name}", python=None)
    default = "python3" if where == "ssh" else sys.executable

    def probe(dev: Device) -> str:
        session = DeviceSession(dev, "unused.pyz")
        try:
            session.open()
        finally:
            session.close()
        assert session.workdir == str(workdir) and (workdir / "models").is_dir()
        return session.python

    try:
        assert probe(base) == default
        venv_python = workdir / "venv" / "bin" / "python"
        venv_python.parent.mkdir(parents=True)
        venv_python.symlink_to(DEVICE_PYTHON)
        assert probe(base) == str(venv_python)
        assert probe(dataclasses.replace(base, python=DEVICE_PYTHON)) == DEVICE_PYTHON  # the key wins
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
