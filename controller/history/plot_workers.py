"""Draw the report's figures in two processes: the HTML report's time is mostly matplotlib (text layout,
ticks, rasterizing; ~0.15 s a figure, ten figures for a two-model run) and one Python process uses one
core.

:func:`draw_all` takes the figure calls (a plot function of :mod:`controller.history.plots` and its
arguments) and returns their PNG bytes in the same order. With more than one core and ``os.fork``, the
process forks once: the child draws every second figure and sends the PNGs back through a pipe, the
parent draws the others. The child needs no pickled input (it has the parent's memory) and leaves with
``os._exit`` (no teardown of the parent's native thread pools in a forked copy).

Nothing is lost when the child fails: a child that crashes, sends something unreadable or has not
answered within :data:`controller.defaults.PLOT_CHILD_TIMEOUT` seconds is killed (by its PID) and the
parent draws its figures itself; a plot function that raises in the child raises in the parent too,
from the parent's own call. A fork that fails (no memory, no process slots) draws everything here.

The child never outlives its work for long: it ignores Ctrl-C (the parent handles it and kills the child),
dies on SIGTERM without running the parent's handlers (signals are blocked across the fork, so none
arrives before that is set up), and carries an alarm of ``PLOT_CHILD_TIMEOUT`` + 10 s, so even a
parent killed with SIGKILL does not leave it holding the parent's open files (such as the nightly lock).
"""

from __future__ import annotations

import logging
import os
import pickle
import selectors
import signal
import time
import warnings
from typing import Any, Callable

from controller.defaults import PLOT_CHILD_TIMEOUT, PLOT_PROCESSES

log = logging.getLogger(__name__)

Call = tuple[Callable[..., "bytes | None"], tuple[Any, ...]]


def _import_matplotlib() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.backends.backend_agg  # the figure, axes, text and Agg modules
    import matplotlib.figure
    import PIL.PngImagePlugin  # noqa: F401 - the PNG writer


def processes() -> int:
    """How many processes draw: ``PLOT_PROCESSES`` capped by the cores this process may use, 1 without fork."""
    if not hasattr(os, "fork"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(PLOT_PROCESSES, cores))


def draw_all(calls: list[Call], workers: int | None = None) -> list[bytes | None]:
    """``[fn(*args) for fn, args in calls]``, the odd-numbered calls drawn in a forked child when
    ``workers`` (default :func:`processes`) is 2 or more and there are at least two calls."""
    workers = processes() if workers is None else workers
    if workers < 2 or len(calls) < 2:
        return [fn(*args) for fn, args in calls]
    _import_matplotlib()  # once, before the fork: the child inherits the modules
    mine = list(range(0, len(calls), 2))
    theirs = list(range(1, len(calls), 2))
    read_end, write_end = os.pipe()
    deadline = time.monotonic() + PLOT_CHILD_TIMEOUT  # from the fork, like the child's alarm
    pid = None
    try:
        pid = _fork()
    finally:
        if pid is None:  # no child: the fork failed, or a signal pending across it was raised
            os.close(read_end)
            os.close(write_end)
    if pid is None:
        return [fn(*args) for fn, args in calls]
    if pid == 0:  # the child: draw, send, leave without running the parent's exit code
        code = 0
        try:
            os.close(read_end)
            try:
                payload = pickle.dumps([calls[i][0](*calls[i][1]) for i in theirs])
            except BaseException:  # noqa: BLE001 - the parent draws them and meets the error itself
                payload, code = b"", 1
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
        finally:
            os._exit(code)
    os.close(write_end)
    out: list[bytes | None] = [None] * len(calls)
    try:
        for i in mine:
            out[i] = calls[i][0](*calls[i][1])
        drawn = _collect(read_end, pid, len(theirs), deadline)
    finally:
        os.close(read_end)
        _reap(pid)
    if drawn is None:
        drawn = [calls[i][0](*calls[i][1]) for i in theirs]
    for i, png in zip(theirs, drawn):
        out[i] = png
    return out


CHILD_SIGNALS = {signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: signal.SIG_DFL, signal.SIGALRM: signal.SIG_DFL}


def _fork() -> int | None:
    """``os.fork()`` with the signals of :data:`CHILD_SIGNALS` blocked across it; in the child (0) they get
    those handlers and the alarm is set before they are unblocked. None (logged) when the fork fails. The
    caller's mask is back on every path; a signal that arrived during the fork is raised here once the
    child is killed and reaped."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set(CHILD_SIGNALS))
    pid = None
    try:
        with warnings.catch_warnings():  # Python 3.12 warns about fork with threads; the child uses none
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError as err:
        log.warning("no figure process (%s); drawing every figure here", err)
    finally:
        if pid == 0:
            try:
                for signum, handler in CHILD_SIGNALS.items():
                    signal.signal(signum, handler)
                signal.alarm(int(PLOT_CHILD_TIMEOUT) + 10)
                signal.pthread_sigmask(signal.SIG_SETMASK, set(blocked) - set(CHILD_SIGNALS))
            except BaseException:  # noqa: BLE001 - never return into the parent's code; the parent draws
                os._exit(1)
        else:
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            except BaseException:
                if pid:
                    _reap(pid)
                raise
    return pid


def _collect(fd: int, pid: int, expected: int, deadline: float) -> list[bytes | None] | None:
    """The child's PNG list, or None (logged) when it failed or had not answered by ``deadline``
    (time.monotonic). A child that is still sending gets a second per chunk past the deadline; its alarm
    ends it at the latest."""
    chunks = []
    with selectors.DefaultSelector() as waiting:  # poll/epoll: any fd number, unlike select()
        waiting.register(fd, selectors.EVENT_READ)
        while True:
            if not waiting.select(max(1.0 if chunks else 0.0, deadline - time.monotonic())):
                log.warning("figure process %d gave no answer within %g s; drawing its figures here", pid,
                            PLOT_CHILD_TIMEOUT)
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    try:
        drawn = pickle.loads(b"".join(chunks))
    except Exception:  # noqa: BLE001 - a crashed or failed child: empty or cut short
        drawn = None
    if not isinstance(drawn, list) or len(drawn) != expected:
        log.debug("figure process %d failed; drawing its figures here", pid)
        return None
    return drawn


def _reap(pid: int) -> None:
    """Wait for the child (ours, by PID); kill it first when it is still running."""
    done, _ = os.waitpid(pid, os.WNOHANG)
    if done == 0:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
