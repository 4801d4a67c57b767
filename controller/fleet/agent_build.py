"""The agent zipapp that is pushed to devices, built from the installed ``agent`` package and cached
per hash of its sources."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import agent
from controller.errors import ToolError


def agent_zipapp() -> str:
    """Path of the agent zipapp to push: built from the installed ``agent`` package with
    ``python -m agent.build``, cached per hash of the agent's sources (so an unchanged agent is the same
    file, and devices that have it get nothing pushed). Raises ToolError when the build fails."""
    package = os.path.dirname(agent.__file__)
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(package)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, package).encode() + b"\0")
            with open(path, "rb") as fh:
                digest.update(fh.read())
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgebench",
                         "agent-build", digest.hexdigest()[:16])
    target = os.path.join(cache, "edgebench-agent.pyz")
    if os.path.isfile(target):
        return target
    os.makedirs(cache, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    proc = subprocess.run([sys.executable, "-m", "agent.build", tmp], check=False, capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(package))
    if proc.returncode != 0 or not os.path.isfile(tmp):
        raise ToolError(f"building the agent zipapp failed (python -m agent.build, exit {proc.returncode}): "
                        f"{proc.stderr.strip()[-500:]}")
    os.replace(tmp, target)
    return target
