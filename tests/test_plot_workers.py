"""The report's figures: drawn in two real processes (os.fork) with the parent taking over whatever the
child could not deliver, and each PNG fitted to what it shows with one draw."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time

import pytest

from controller.history import plot_workers, plots

PARENT = os.getpid()


def whose(i: int) -> bytes:
    return f"{i}:{os.getpid()}".encode()


def fails_in_the_child(i: int) -> bytes:
    if os.getpid() != PARENT:
        raise RuntimeError("only in the child")
    return whose(i)


def hangs_in_the_child(i: int) -> bytes:
    if os.getpid() != PARENT:
        time.sleep(60)
    return whose(i)


def broken(i: int) -> bytes:
    raise ValueError(f"figure {i} cannot be drawn")


def test_every_second_figure_is_drawn_in_a_child_and_the_order_is_kept():
    out = plot_workers.draw_all([(whose, (i,)) for i in range(5)], workers=2)
    indexes = [int(o.split(b":")[0]) for o in out]
    pids = [int(o.split(b":")[1]) for o in out]
    assert indexes == [0, 1, 2, 3, 4]
    assert pids[0] == pids[2] == pids[4] == PARENT
    assert pids[1] == pids[3] != PARENT
    with pytest.raises(ChildProcessError):
        os.waitpid(pids[1], os.WNOHANG)  # reaped: no zombie left behind
    assert plot_workers.draw_all([(whose, (0,)), (whose, (1,))], workers=1) == [b"0:%d" % PARENT, b"1:%d" % PARENT]


def test_what_the_child_could_not_draw_the_parent_draws():
    out = plot_workers.draw_all([(fails_in_the_child, (i,)) for i in range(4)], workers=2)
    assert out == [whose(i) for i in range(4)]  # all from this process


def test_a_child_that_does_not_answer_is_killed_and_its_figures_drawn_here(monkeypatch):
    monkeypatch.setattr(plot_workers, "PLOT_CHILD_TIMEOUT", 1.0)
    start = time.monotonic()
    out = plot_workers.draw_all([(hangs_in_the_child, (i,)) for i in range(2)], workers=2)
    assert out == [whose(0), whose(1)]
    assert time.monotonic() - start < 30


def signals_here(i: int) -> tuple[int, bool, bool, int, set]:
    """Who drew, whether Ctrl-C is ignored and SIGTERM left to its default, the alarm left, the blocked set."""
    alarm = signal.alarm(0)
    return (os.getpid(), signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
            signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, alarm, signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_the_child_ignores_ctrl_c_dies_on_sigterm_and_carries_an_alarm(monkeypatch):
    monkeypatch.setattr(plot_workers, "PLOT_CHILD_TIMEOUT", 30.0)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    (parent, _, _, parent_alarm, parent_mask), (child, ignores, default, alarm, child_mask) = plot_workers.draw_all(
        [(signals_here, (0,)), (signals_here, (1,))], workers=2)
    assert parent == PARENT and child != PARENT
    assert ignores and default and 30 < alarm <= 40  # PLOT_CHILD_TIMEOUT + 10 s
    assert child_mask == parent_mask == mask  # unblocked again on both sides of the fork
    assert parent_alarm == 0 and {s: signal.getsignal(s) for s in handlers} == handlers  # the parent's untouched


@contextlib.contextmanager
def mask_and_fds_kept():
    """Assert that the block runs with this thread's signal mask and open file descriptors unchanged after."""
    mask, fds = signal.pthread_sigmask(signal.SIG_BLOCK, []), len(os.listdir("/proc/self/fd"))
    yield
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask and len(os.listdir("/proc/self/fd")) == fds


def test_a_failed_fork_draws_everything_here(monkeypatch):
    def no_fork():  # a fork refused for want of processes cannot be provoked as root here
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(plot_workers.os, "fork", no_fork)
    with mask_and_fds_kept():
        assert plot_workers.draw_all([(whose, (i,)) for i in range(3)], workers=2) == [whose(i) for i in range(3)]


def test_ctrl_c_during_the_fork_kills_the_child_and_leaves_nothing_behind(monkeypatch):
    """A Ctrl-C that arrives while the signals are blocked for the fork is raised when they are unblocked:
    the child is killed and reaped, the pipe closed, the mask back."""
    real_fork, children = os.fork, []

    def fork_then_ctrl_c():
        pid = real_fork()
        if pid:
            children.append(pid)
            os.kill(os.getpid(), signal.SIGINT)  # blocked now: pending until the mask is restored
        return pid

    monkeypatch.setattr(plot_workers.os, "fork", fork_then_ctrl_c)
    with mask_and_fds_kept(), pytest.raises(KeyboardInterrupt):
        plot_workers.draw_all([(hangs_in_the_child, (i,)) for i in range(2)], workers=2)
    (child,) = children
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # killed and reaped


def test_an_error_raised_by_the_fork_itself_restores_the_mask(monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(plot_workers.os, "fork", interrupted)
    with mask_and_fds_kept(), pytest.raises(KeyboardInterrupt):
        plot_workers.draw_all([(whose, (i,)) for i in range(2)], workers=2)


def test_the_child_unblocks_its_signals_even_when_the_caller_had_them_blocked():
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1})
    try:
        (_, _, _, _, parent_mask), (_, _, _, alarm, child_mask) = plot_workers.draw_all(
            [(signals_here, (0,)), (signals_here, (1,))], workers=2)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    assert parent_mask == {signal.SIGTERM, signal.SIGUSR1} | previous
    assert child_mask == {signal.SIGUSR1} | previous and alarm > 0  # SIGTERM and the alarm reach the child


def test_a_figure_that_cannot_be_drawn_raises_its_own_error():
    with pytest.raises(ValueError, match="figure 1 cannot be drawn"):
        plot_workers.draw_all([(whose, (0,)), (broken, (1,))], workers=2)


def test_the_png_is_fitted_like_savefig_tight_in_one_draw():
    """Slanted tick labels stick out below the figure: the PNG grows to hold them, as savefig's
    bbox_inches='tight' does (same size within a few pixels)."""
    from PIL import Image

    def figure():
        fig = plots._figure(4.0, 2.0)
        ax = fig.add_subplot()
        ax.bar(range(6), [1, 2, 3, 4, 5, 6])
        ax.set_xticks(range(6), [f"a long device name {i}" for i in range(6)], rotation=45, ha="right")
        return fig

    mine = Image.open(io.BytesIO(plots._png(figure())))
    buf = io.BytesIO()
    figure().savefig(buf, format="png", dpi=plots.DPI, bbox_inches="tight", pad_inches=plots.PAD_INCHES)
    theirs = Image.open(io.BytesIO(buf.getvalue()))
    assert mine.size[1] > 2.0 * plots.DPI + 50  # taller than the figure asked for: the labels are in
    assert abs(mine.size[0] - theirs.size[0]) <= 4 and abs(mine.size[1] - theirs.size[1]) <= 4, (mine.size, theirs.size)
