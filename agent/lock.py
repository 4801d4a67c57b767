"""The device lock: one controller at a time measures on a device (``fcntl.flock`` on a file).

The lock is advisory and tied to the open file: it is released when the holder exits, however it
exits, so a crashed agent never leaves a stale lock. The holder writes its pid into the file so that
a waiter can say who holds it. Standard library only.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from agent.errors import BusyError, UsageError

_POLL_S = 0.05
LOCK_TIMEOUT = 60.0  #: seconds a batch waits for the device lock by default (the controller's default too)


class DeviceLock:
    """``with DeviceLock(path, timeout):`` holds an exclusive flock on ``path`` for the block."""

    def __init__(self, path: str, timeout: float):
        self.path = Path(path)
        self.timeout = timeout
        self._file: object | None = None

    def __enter__(self) -> DeviceLock:  # noqa: PYI034 - typing.Self is 3.11+, devices run 3.9+
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout`` seconds.

        Raises BusyError (naming the holder's pid) when the deadline passes, UsageError when the lock
        file cannot be opened.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+")  # noqa: SIM115 - held open while the lock is held
        except OSError as exc:
            raise UsageError(f"cannot open the lock file {self.path}: {exc.strerror or exc}") from exc
        deadline = time.monotonic() + max(0.0, self.timeout)
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self.holder()
                    f.close()
                    raise BusyError(f"the device lock {self.path} is held by {holder} and was not released "
                                    f"within {self.timeout:g} s: another controller is measuring on this "
                                    "device; retry later or raise --lock-timeout") from None
                time.sleep(_POLL_S)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def fileno(self) -> int:
        """The held lock file's descriptor (a child given it keeps the lock held while it lives)."""
        if self._file is None:
            raise ValueError("the lock is not held")
        return self._file.fileno()

    def holder(self) -> str:
        """Who holds the lock, in words ("pid 123"), from the pid its holder wrote into the file."""
        try:
            pid = self.path.read_text().strip()
        except OSError:
            pid = ""
        return f"pid {pid}" if pid else "another process"

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
