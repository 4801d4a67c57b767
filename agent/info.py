"""``python -m agent info``: this device's environment and every TFLite runtime it can load.

Whether a runtime *loads* is only known by importing it (tflite-runtime built for numpy 1 fails under
numpy 2, a wheel for the wrong CPU fails with an illegal instruction), so each installed runtime is
imported in its own short-lived child process, in parallel, with a deadline. This process imports
neither numpy nor a runtime.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata

from agent import __version__, cpus, probes, runtimes

IMPORT_TIMEOUT_S = 120.0


def _numpy_version() -> str | None:
    try:
        return metadata.version("numpy")
    except metadata.PackageNotFoundError:
        return None


def _import_check(module: str) -> tuple[bool, str | None]:
    """Import ``module`` in a fresh child of this python with a deadline: (ok, error or None)."""
    proc = subprocess.Popen([sys.executable, "-c", f"import {module}"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=IMPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return False, f"importing {module} took longer than {IMPORT_TIMEOUT_S:g} s"
    if proc.returncode == 0:
        return True, None
    lines = err.decode("utf-8", "replace").strip().splitlines()
    return False, lines[-1] if lines else f"import exited with {proc.returncode}"


def collect(workdir: str = ".", runtime: str | None = None) -> dict:
    """The info document (docs/internals.md): agent_version, env, runtimes, python_executable,
    numpy_version, disk_free_kb. Never raises for a broken runtime: it is listed with ok=false.

    ``runtime=None`` import-checks every installed runtime (in parallel). ``runtime="auto"`` checks them
    in discovery order and stops at the first that imports; a runtime name checks only that one. A
    runtime left unchecked this way has ``ok: null`` (installed, not import-checked) - this is what a
    fleet run asks for, since importing TensorFlow just to list it costs seconds.
    """
    found = runtimes.available()
    installed = [e for e in found if e["installed"]]
    checks: dict = {}
    if runtime is None:
        with ThreadPoolExecutor(max_workers=max(1, len(installed))) as pool:
            futures = {e["name"]: pool.submit(_import_check, e["module"]) for e in installed}
            checks = {name: f.result() for name, f in futures.items()}
    else:
        for entry in installed:
            if runtime in ("auto", entry["name"]):
                checks[entry["name"]] = _import_check(entry["module"])
                if checks[entry["name"]][0]:
                    break
    result = []
    for entry in found:
        if not entry["installed"]:
            ok, error = False, "not installed"
        elif entry["name"] in checks:
            ok, error = checks[entry["name"]]
        else:
            ok, error = None, "not import-checked"
        result.append({"name": entry["name"], "module": entry["module"], "version": entry["version"],
                       "ok": ok, "error": error})
    return {
        "agent_version": __version__,
        "env": probes.environment(),
        "runtimes": result,
        "python_executable": sys.executable,
        "numpy_version": _numpy_version(),
        "disk_free_kb": probes.disk_free_kb(workdir),
        "clusters": [{"name": c.name, "cpus": list(c.cpus), "capacity": c.capacity, "source": c.source}
                     for c in cpus.clusters(probes.sysfs_root())],
    }


def summary(doc: dict) -> str:
    """The info document as readable lines."""
    env = doc["env"]
    lines = [(f"agent     {doc['agent_version']} on {env['hostname']} ({env['arch']}, {env['cpu_count']} cpus, "
             f"{env['cpu_model']})"),
             f"python    {env['python']} ({doc['python_executable']}), numpy {doc['numpy_version']}",
             (f"cpu       governor {env['governor']}, {env['freq_mhz']} MHz, {env['temp_c_before']} C, "
             f"load {env['loadavg']}"),
             f"disk      {doc['disk_free_kb']} kB free",
             "clusters  " + ", ".join(f"{c['name']} {c['cpus']}" for c in doc.get("clusters") or [])]
    for r in doc["runtimes"]:
        state = {True: "ok", None: "installed (not import-checked)"}.get(r["ok"], f"unusable: {r['error']}")
        lines.append(f"runtime   {r['name']:<15} {r['version'] or '-':<10} {state}")
    return "\n".join(lines)
