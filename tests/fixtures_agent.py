"""Fixtures for running the agent as a device does: the zipapp, with a python holding only numpy + a runtime.

``agent_venv_python``: path of ``.venv-agent/bin/python`` (numpy + ai-edge-litert only, from
requirements/agent.txt); created with ``python3 -m venv`` + pip when missing (PyPI is reachable).
``agent_pyz``: ``edgebench-agent.pyz`` freshly built by ``agent.build`` into a session temp folder.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent.build import build

REPO = Path(__file__).resolve().parent.parent
AGENT_VENV = REPO / ".venv-agent"
VENV_DEADLINE_S = 900


@pytest.fixture(scope="session")
def agent_venv_python() -> Path:
    python = AGENT_VENV / "bin" / "python"
    probe = [str(python), "-c", "import numpy, ai_edge_litert.interpreter"]
    if python.exists() and subprocess.run(probe, capture_output=True, timeout=120, check=False).returncode == 0:
        return python
    system_python = shutil.which("python3.11") or shutil.which("python3")
    subprocess.run([system_python, "-m", "venv", str(AGENT_VENV)], check=True, timeout=120)
    subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r",
                    str(REPO / "requirements" / "agent.txt")], check=True, timeout=VENV_DEADLINE_S)
    subprocess.run(probe, check=True, timeout=120)
    return python


@pytest.fixture(scope="session")
def agent_pyz(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("pyz") / "edgebench-agent.pyz")
