"""Terminal tables of the history: series of a metric with sparklines, and the list of runs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

from rich.table import Table

from controller.history.series import Series, sparkline


def series_table(series: list[Series], metric: str, limit: int) -> Table:
    """One line per series: key, short fingerprint, runs, first and last date, latest value, change vs
    the median of the earlier runs, min, max and a sparkline of the last 24 points. At most ``limit``
    lines; the caption says how many more there are."""
    table = Table(title=f"history of {metric}")
    for column in ("device", "model", "variant", "threads", "fingerprint", "runs", "first", "last", "latest",
                   "change", "min", "max", "trend"):
        table.add_column(column, justify="right" if column in ("threads", "runs", "latest", "change", "min",
                                                               "max") else "left", no_wrap=True)
    for s in series[:limit]:
        doc = s.to_dict(points=False)
        change = doc["change"]
        if change is None:
            change_text = "-"
        else:
            style = "red" if change > 0.05 else "green" if change < -0.05 else ""
            change_text = f"{change * 100:+.1f}%"
            change_text = f"[{style}]{change_text}[/]" if style else change_text
        table.add_row(str(doc["device"]), str(doc["model"]), str(doc["variant"]), str(doc["threads"]),
                      str(doc["device_fingerprint"] or "-")[:8], str(doc["count"]), doc["first"][:10],
                      doc["last"][:16].replace("T", " "), _value(doc["latest"]), change_text, _value(doc["min"]),
                      _value(doc["max"]), sparkline(s.values))
    if len(series) > limit:
        table.caption = (f"{len(series) - limit} more series; narrow with --device / --model / --variant / "
                         "--threads, or raise --limit")
    return table


def runs_table(runs: pd.DataFrame) -> Table:
    """``edgebench history --runs``: one line per indexed run, oldest first."""
    table = Table(title="runs")
    for column in ("run", "created", "kind", "rows", "exit", "devices", "path"):
        table.add_column(column, justify="right" if column in ("rows", "exit", "devices") else "left",
                         overflow="fold")
    for row in runs.to_dict("records"):
        exit_code = row.get("exit_code")
        devices = len([f for f in str(row.get("fingerprints") or "").split(",") if f])
        table.add_row(str(row["run_id"]), str(row["created"])[:19], str(row["kind"]), str(row["rows"]),
                      "-" if exit_code is None or math.isnan(exit_code) else str(int(exit_code)), str(devices),
                      str(row["path"]))
    return table


def _value(value: float) -> str:
    """A metric value with 3 significant decimals for small numbers, thousands separators for big."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"
