"""The one way commands get a rich Console (stdout for results, stderr for progress and errors)."""

from __future__ import annotations


def console(stderr: bool = False):
    """A rich Console: the terminal's width on a terminal, 160 columns when piped (logs, CI), so tables
    stay one line per row."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr) if stream.isatty() else Console(stderr=stderr, width=160)
