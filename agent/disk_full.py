"""A full disk on the device, told apart from other write errors and reported with the free space.

A run's results, outputs and scratch files are written on the device; when its disk (or the user's
quota) fills up in the middle of a batch, the write fails with ENOSPC / EDQUOT. That is not a bug in the
agent and not a bad model: :func:`is_disk_full` recognises it and :func:`message` says where, how much
is free and what to do. Standard library only.
"""

from __future__ import annotations

import errno
import os
import shutil

_FULL = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` is an OSError saying the disk or the quota is full."""
    return isinstance(exc, OSError) and exc.errno in _FULL


def free_kb(path: str | os.PathLike) -> int | None:
    """Free space (KiB) of the file system holding ``path`` (or its nearest existing parent), or None."""
    probe = os.path.abspath(path)
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent
    try:
        return shutil.disk_usage(probe).free // 1024
    except OSError:
        return None


def message(path: str | os.PathLike, exc: OSError, what: str) -> str:
    """One sentence: the disk holding ``path`` is full while doing ``what``, the free space, the fix."""
    free = free_kb(path)
    free_text = f"{free} KiB free" if free is not None else "free space unknown"
    return (f"the device's disk is full ({exc.strerror or exc}) while {what} {path}: {free_text} there; "
            "free space on the device (e.g. delete old runs under the workdir) and run again")
