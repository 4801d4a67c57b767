"""Opening an input file that must be a regular file: never block, never read forever, say what it is.

A path given as a model, an inputs file or a config file may name a directory, a FIFO (``open()`` blocks
until a writer appears: a batch would hang forever), a device such as ``/dev/zero`` (a read never ends),
a symlink loop, or a file this user may not read. :func:`open_regular` opens with ``O_NONBLOCK`` and
checks the *opened* file's type with ``fstat`` (no race between a check and the open), so each of these
is one :class:`NotRegularFile` at once, whose message says what the path is. Standard library only; the
controller uses it too, so both sides word these cases the same way.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))

_ERRNO_WORDS = {
    errno.ENOENT: "does not exist",
    errno.EACCES: "is not readable (permission denied)",
    errno.EPERM: "is not readable (operation not permitted)",
    errno.ELOOP: "is a symlink loop (too many levels of symbolic links)",
    errno.ENOTDIR: "does not exist (a part of the path is not a directory)",
    errno.ENAMETOOLONG: "is not a usable path (name too long)",
}


class NotRegularFile(OSError):
    """``path`` cannot be used as an input file. ``reason`` says why in words ("is a directory, not a
    regular file", "is not readable (permission denied)", ...); ``missing`` is True when it does not
    exist and ``not_regular`` when it exists but is no regular file (a directory, FIFO, device, socket).
    An OSError, so callers that already handle OSError keep working; ``strerror`` is the reason."""

    def __init__(self, path: str, reason: str, code: int = 0, missing: bool = False, not_regular: bool = False):
        super().__init__(code, reason, path)
        self.path = str(path)
        self.reason = reason
        self.missing = missing
        self.not_regular = not_regular

    def __str__(self) -> str:
        return f"{self.path} {self.reason}"


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for binary reading if it is a readable regular file (symlinks followed).

    Never blocks (a FIFO is opened non-blocking and refused). Raises :class:`NotRegularFile` naming the
    path and what it is: missing, unreadable, a symlink loop, a directory, a FIFO, a device or a socket.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        words = _ERRNO_WORDS.get(exc.errno or 0, f"cannot be opened ({exc.strerror or exc})")
        raise NotRegularFile(str(path), words, exc.errno or 0, exc.errno == errno.ENOENT) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise NotRegularFile(str(path), f"is {what}, not a regular file",
                                 errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL, not_regular=True)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | os.PathLike) -> None:
    """Raise :class:`NotRegularFile` unless ``path`` is a readable regular file (see open_regular)."""
    open_regular(path).close()
