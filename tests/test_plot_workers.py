"""The report's figures: drawn in two real processes (os.fork) with the parent taking over whatever the
child could not deliver, and each PNG fitted to what it shows with one draw."""

from __future__ import annotations

import io
import os
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
