"""Upload temp files (``<final>.part-<token>``) on a device: never left behind.

A push writes ``<final>.part-<token>`` and renames it only after its sha256 matched on the device
(:meth:`controller.fleet.session.DeviceSession.push_verified`). An interrupted run (Ctrl-C, SIGTERM)
removes its own part files over a fresh connection where it can (:func:`remove_own`, bounded by the
device's connect timeout); a controller killed outright (SIGKILL, power) cannot, so every run first
sweeps stale part files from the device's ``agent/``, ``models/`` and ``data/`` folders
(:func:`sweep_stale`).

Stale = not modified for ``STALE_FACTOR`` x the device's ``command_timeout``. A live upload of another
controller keeps writing its part file; an SFTP write that stalls longer than ``command_timeout`` fails
(the channel's timeout), so a part file that old belongs to no live upload and deleting it is safe.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

STALE_FACTOR = 2.0
SWEPT_FOLDERS = ("agent", "models", "data")

# Runs on the device: argv = max_age_s folder...; removes '*.part-*' files older than max_age_s and prints
# the removed paths as a JSON list.
_SWEEP_SCRIPT = """
import json, os, sys, time
max_age, removed = float(sys.argv[1]), []
for folder in sys.argv[2:]:
    try:
        names = os.listdir(folder)
    except OSError:
        continue
    for name in names:
        path = os.path.join(folder, name)
        if '.part-' not in name:
            continue
        try:
            if time.time() - os.lstat(path).st_mtime > max_age:
                os.unlink(path)
                removed.append(path)
        except OSError:
            pass
print(json.dumps(removed))
"""


def sweep_stale(session: Any) -> list[str]:
    """Remove stale part files from the session's device (see the module docstring); return their paths.
    Never raises for the sweep itself: a device that cannot run it is logged and the run goes on."""
    max_age = STALE_FACTOR * session.device.command_timeout
    folders = [posixpath.join(session.workdir, f) for f in SWEPT_FOLDERS]
    result = session.run_python(["-c", _SWEEP_SCRIPT, f"{max_age:g}", *folders])
    if not result.ok:
        log.warning("%s: sweeping stale upload temp files failed: %s", session.device.name, result.stderr[-300:])
        return []
    try:
        removed = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return []
    if removed:
        log.info("%s: removed %d stale upload temp file(s) of an earlier run: %s", session.device.name,
                 len(removed), ", ".join(removed))
    return removed


def remove_own(device: Any, parts: Sequence[str]) -> bool:
    """Remove ``parts`` (this run's unfinished uploads) over a fresh connection, within the device's
    connect timeout plus a few seconds. Returns True when they are gone; False (logged) when the device
    cannot be reached now: the next run's :func:`sweep_stale` removes them."""
    from controller.errors import EdgebenchError
    from controller.fleet.transport import open_transport

    if not parts:
        return True
    transport = None
    try:
        transport = open_transport(device)
        result = transport.run(["rm", "-f", "--", *parts], timeout=min(10.0, device.command_timeout))
        return result.exit_code == 0
    except (EdgebenchError, OSError) as exc:
        log.warning("%s: could not remove the interrupted upload(s) %s now (%s); the next run removes them",
                    device.name, ", ".join(parts), exc)
        return False
    finally:
        if transport is not None:
            transport.close()
