"""A deadline for SFTP transfers on a link that died: :class:`StallGuard`.

paramiko has no deadline on a blocked socket write (a full TCP send buffer on a dead link blocks
``sftp.put`` until the kernel gives up, ~15 min), and the transport's own keepalive cannot help because it
queues behind that write. The guard watches an SFTP call from a helper thread: when the call makes no
progress (no bytes moved, no answer) for ``limit`` seconds it shuts the connection's socket down, which
unblocks the call with an error; ``fired`` then tells the caller the link is dead.
"""

from __future__ import annotations

import socket
import threading
import time


class StallGuard:
    """``with StallGuard(sock, limit) as guard:`` run one SFTP call; ``guard.progress()`` on every byte
    callback. After the block, ``guard.fired`` says whether the guard shut ``sock`` down."""

    def __init__(self, sock, limit: float):
        self.sock = sock  #: the connection's socket (or a paramiko Channel through a ProxyJump gateway)
        self.limit = limit
        self.fired = False
        self.last = time.monotonic()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def progress(self, *_args) -> None:
        """The call moved bytes: its stall clock starts again."""
        self.last = time.monotonic()

    def __enter__(self) -> StallGuard:  # noqa: PYI034
        self.last = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="sftp-stall-guard", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._done.wait(min(1.0, self.limit / 4)):
            if time.monotonic() - self.last > self.limit:
                self.fired = True
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already gone: the blocked call fails on its own
                return
