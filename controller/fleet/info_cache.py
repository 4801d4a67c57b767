"""The controller's cache of ``agent info`` answers, so a second run on an unchanged device does not pay
for it again (``info`` import-checks the runtime in a child process: seconds on a small board).

An entry is keyed by everything the answer depends on: the device (name, host), the agent zipapp's
sha256, the runtime asked for, and the facts the probe reads cheaply on the device each time
(interpreter path and version, kernel, CPU count, each runtime's and numpy's installed version from
package metadata). A new agent, a runtime or numpy up- or downgraded, another python or kernel: another
key, so ``info`` runs again. Only an answer with a usable runtime is stored. The entries are small JSON
files under ``$XDG_CACHE_HOME/edgebench/device-info/`` (``~/.cache`` by default), at most MAX_ENTRIES
(the least recently written go first); deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

from controller import defaults
from controller.fleet.inventory import Device
from controller.fleet.store import atomic_write

log = logging.getLogger(__name__)

MAX_ENTRIES = 512  #: answers kept; a few KiB each


def cache_key(device: Device, agent_sha256: str, runtime: str | None, facts: dict[str, Any]) -> str:
    """The key of one device's ``info`` answer (see the module docstring)."""
    material = [device.name, device.host, device.port, agent_sha256, runtime, facts]
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


class InfoCache:
    """``agent info`` answers on disk, one file per key."""

    def __init__(self, folder: str | None = None):
        self.folder = folder or defaults.cache_folder("device-info")

    def _path(self, key: str) -> str:
        return os.path.join(self.folder, f"{key[:32]}.json")

    def load(self, key: str) -> dict[str, Any] | None:
        """The stored answer for ``key``, or None (none stored, or unreadable: then info runs again)."""
        try:
            with open(self._path(key), encoding="utf-8") as fh:
                entry = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("device info cache entry %s unreadable (%s); asking the device again", self._path(key), exc)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("info"), dict):
            return None
        return entry["info"]

    def save(self, key: str, info: dict[str, Any]) -> None:
        """Store ``info`` under ``key``. A cache that cannot be written is logged, never an error: the
        next run just asks the device again."""
        try:
            os.makedirs(self.folder, exist_ok=True)
            atomic_write(self._path(key), json.dumps({"key": key, "info": info}).encode())
            self._prune()
        except OSError as exc:
            log.warning("device info cache not written to %s: %s", self.folder, exc)

    def _prune(self) -> None:
        """Delete the least recently written entries beyond MAX_ENTRIES."""
        entries = [e for e in os.scandir(self.folder) if e.name.endswith(".json") and e.is_file()]
        if len(entries) <= MAX_ENTRIES:
            return
        entries.sort(key=lambda e: e.stat().st_mtime_ns)
        for entry in entries[: len(entries) - MAX_ENTRIES]:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue  # another controller pruned it first
