"""``python -m agent info``: this device's environment and every TFLite runtime it can load.

Whether a runtime *loads* is only known by importing it (tflite-runtime built for numpy 1 fails under
numpy 2, a wheel for the wrong CPU fails with an illegal instruction), so each installed runtime is
imported in its own short-lived child process, in parallel, with a deadline. This process imports
neither numpy nor a runtime.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from agent import __version__, probes, runtimes

IMPORT_TIMEOUT_S = 120.0


def _numpy_version() -> str | None:
    try:
        return metadata.version("numpy")
    except metadata.PackageNotFoundError:
        return None


def collect(workdir: str = ".", python: str = sys.executable) -> dict:
    """The info document (docs/internals.md): agent_version, env, runtimes, python_executable,
    numpy_version, disk_free_kb. Never raises for a broken runtime: it is listed with ok=false."""
    found = runtimes.available()
    children = {}
    for entry in found:
        if entry["installed"]:
            children[entry["name"]] = subprocess.Popen(
                [python, "-c", f"import {entry['module']}"], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    result = []
    for entry in found:
        ok, error = False, "not installed"
        proc = children.get(entry["name"])
        if proc is not None:
            try:
                _, err = proc.communicate(timeout=IMPORT_TIMEOUT_S)
                ok = proc.returncode == 0
                lines = err.decode("utf-8", "replace").strip().splitlines()
                error = None if ok else (lines[-1] if lines else f"import exited with {proc.returncode}")
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                error = f"importing {entry['module']} took longer than {IMPORT_TIMEOUT_S:g} s"
        result.append({"name": entry["name"], "module": entry["module"], "version": entry["version"],
                       "ok": ok, "error": error})
    return {
        "agent_version": __version__,
        "env": probes.environment(),
        "runtimes": result,
        "python_executable": sys.executable,
        "numpy_version": _numpy_version(),
        "disk_free_kb": probes.disk_free_kb(workdir),
    }


def summary(doc: dict) -> str:
    """The info document as readable lines."""
    env = doc["env"]
    lines = [(f"agent     {doc['agent_version']} on {env['hostname']} ({env['arch']}, {env['cpu_count']} cpus, "
             f"{env['cpu_model']})"),
             f"python    {env['python']} ({doc['python_executable']}), numpy {doc['numpy_version']}",
             (f"cpu       governor {env['governor']}, {env['freq_mhz']} MHz, {env['temp_c_before']} C, "
             f"load {env['loadavg']}"),
             f"disk      {doc['disk_free_kb']} kB free"]
    for r in doc["runtimes"]:
        state = "ok" if r["ok"] else f"unusable: {r['error']}"
        lines.append(f"runtime   {r['name']:<15} {r['version'] or '-':<10} {state}")
    return "\n".join(lines)
