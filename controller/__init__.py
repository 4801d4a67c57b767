"""edgebench controller: runs on the workstation (convert, inspect, fleet runs, results, reports)."""

from agent import __version__  # one version for the whole distribution

__all__ = ["__version__"]
