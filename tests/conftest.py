"""Shared fixtures of the edgebench test suite.

``test_models``: name -> Path of tiny real .tflite models made by ``tests/modelgen.py`` with the real
TensorFlow converter, generated once per modelgen source hash into ``build/test-models/<hash>/``.
See ``tests/modelgen.py`` (``MODELS``, ``PURPOSE``, ``BAD_MODELS``) and docs/internals.md "Test models".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests import modelgen
from tests.fixtures_agent import agent_pyz, agent_venv_python  # noqa: F401  (zipapp + bare venv)
from tests.fixtures_arm import arm_board  # noqa: F401  (emulated aarch64 board in a netns)
from tests.fixtures_convert import keras_family, quantized_family  # noqa: F401  (real conversions)
from tests.fixtures_daemon import agent_daemon  # noqa: F401  (a real agent daemon process)
from tests.fixtures_family import family  # noqa: F401  (convnet fp32/fp16/int8 + manifest + eval)
from tests.fixtures_fleet import ssh_fleet, ssh_key, sshd_factory  # noqa: F401  (loopback sshd fleet)
from tests.fixtures_history import history_runs  # noqa: F401  (real run folders for history/report)
from tests.fixtures_postgres import pg_database, postgres  # noqa: F401  (a real PostgreSQL server)


@pytest.fixture(scope="session")
def test_models() -> dict[str, Path]:
    """name -> path of every test model (see ``modelgen.MODELS``); generated at most once per source."""
    return modelgen.ensure_models()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 320 KiB tmpfs (a real full disk for a device's workdir; its name has a space, as paths do);
    unmounted afterwards."""
    mount = tmp_path / "tiny disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mount)], check=True, timeout=30)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True, timeout=30)
