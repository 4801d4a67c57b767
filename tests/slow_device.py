"""A device that can be made slower on purpose, for the nightly tests: a ``python`` wrapper for the device
whose ``sitecustomize`` makes every ``Interpreter.invoke`` of ai-edge-litert busy-wait ``delay_ms`` after the
real inference.

Everything edgebench does stays real (agent, workers, runtime, model); only the board's speed is turned
down, the way a background daemon or a lower clock would. The control file (JSON) says how:
``{"delay_ms": 2.0, "workers": N}`` slows the first N measuring workers started after the counter was
reset (``null``: every worker). The Python version and the runtime are those of the bare device venv, so
the device fingerprint does not change.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures_fleet import DEVICE_PYTHON

SITECUSTOMIZE = '''
import importlib.abc, importlib.util, json, os, sys, time

_CONTROL = os.environ.get("EDGEBENCH_TEST_SLOW")


class _SlowInvoke(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "ai_edge_litert.interpreter" or not _CONTROL:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            invoke = module.Interpreter.invoke
            decided = []

            def slow_invoke(self, *args, **kwargs):
                if not decided:  # the first invoke of this process: is it one of the slowed workers?
                    with open(_CONTROL) as fh:
                        control = json.load(fh)
                    with open(_CONTROL + ".count", "a") as fh:
                        fh.write("x\\n")
                    with open(_CONTROL + ".count") as fh:
                        started = len(fh.readlines())
                    workers = control.get("workers")
                    slow = workers is None or started <= workers
                    decided.append(control.get("delay_ms", 0.0) / 1000.0 if slow else 0.0)
                result = invoke(self, *args, **kwargs)
                end = time.perf_counter() + decided[0]  # added to the real inference time
                while time.perf_counter() < end:
                    pass
                return result

            module.Interpreter.invoke = slow_invoke

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _SlowInvoke())
'''


@dataclass
class SlowDevice:
    """The wrapper ``python`` (put it in devices.yaml) and its control file."""

    python: Path
    control: Path

    def set(self, delay_ms: float, workers: int | None = None) -> None:
        """Slow every invoke by ``delay_ms`` in the next ``workers`` measuring workers (None: all)."""
        self.control.write_text(json.dumps({"delay_ms": delay_ms, "workers": workers}))
        counter = Path(f"{self.control}.count")
        if counter.exists():
            counter.unlink()

    def normal(self) -> None:
        self.set(0.0)


def make_slow_device(folder: Path) -> SlowDevice:
    """Write the sitecustomize, the control file and the wrapper into ``folder``."""
    site = folder / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    control = folder / "slow.json"
    wrapper = folder / "python3"
    wrapper.write_text(f"#!/bin/sh\nexport PYTHONPATH='{site}' EDGEBENCH_TEST_SLOW='{control}'\n"
                       f"exec '{DEVICE_PYTHON}' \"$@\"\n")
    os.chmod(wrapper, 0o755)
    device = SlowDevice(wrapper, control)
    device.normal()
    return device
