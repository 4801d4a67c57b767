"""History over run folders: the index, the reports and the notebook API.

For a notebook::

    from controller.history import load_history
    frame = load_history("reports", model="demo", variant="int8")   # every indexed run, oldest first
    one = load_history("reports", run="20261130T160756Z-ffa86f")      # one run folder, report columns

See :func:`controller.history.api.load_history`.
"""

from __future__ import annotations

from typing import Any


def load_history(*args: Any, **kwargs: Any):
    """See :func:`controller.history.api.load_history` (imported lazily: pandas is heavy)."""
    from controller.history.api import load_history as _load

    return _load(*args, **kwargs)


__all__ = ["load_history"]
