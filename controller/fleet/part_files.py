"""Upload temp files (``<final>.part-<token>``) on a device: never left behind.

A push writes ``<final>.part-<token>`` and renames it only after its sha256 matched on the device
(:meth:`controller.fleet.session.DeviceSession.push_verified`). An interrupted run (Ctrl-C, SIGTERM)
removes its own part files over a fresh connection where it can (:func:`remove_own`, bounded by the
device's connect timeout); a controller killed outright (SIGKILL, power) cannot, so every run first
sweeps stale part files from the device's ``agent/``, ``models/`` and ``data/`` folders in its
probe (no extra round trip; :func:`sweep_stale` reports them).

Stale = not modified for ``STALE_FACTOR`` x the device's ``command_timeout``. A live upload of another
controller keeps writing its part file; an SFTP write that stalls longer than ``command_timeout`` fails
(the channel's timeout), so a part file that old belongs to no live upload and deleting it is safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

STALE_FACTOR = 2.0

def sweep_stale(session: Any) -> list[str]:
    """The stale part files the session's probe removed from the device (see the module docstring: the
    probe of :mod:`controller.fleet.device_scripts` sweeps ``agent/``, ``models/`` and ``data/`` in the
    same round trip); logged, and returned."""
    removed = list((getattr(session, "probed", None) or {}).get("removed_parts") or [])
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
