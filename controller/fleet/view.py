"""What people see in the terminal: the live fleet board (or progress as log lines), the results table,
the devices table.

Only rendering lives here (rich tables from typed values); the numbers come from the run folder's
DataFrame (:mod:`controller.fleet.store`) and the fleet's :class:`~controller.fleet.DeviceStatus` values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import pandas as pd

from rich.table import Table

from controller.fleet.session import DeviceStatus
from controller.fleet.store import present

_STATE_STYLE = {"done": "green", "failed": "red", "running": "cyan", "pushing": "yellow"}
_STATUS_STYLE = {"ok": "green", "skipped": "yellow"}


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    if not present(value):
        return "-"
    return fmt.format(value)


def human_bytes(count: int | None) -> str:
    """``1234567`` -> ``1.2 MB`` (decimal units, as transfer sizes are usually quoted)."""
    if not count:
        return "0 B"
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


class FleetBoard:
    """The live progress display: one line per device with its state, bytes pushed and jobs done.

    Thread-safe ``update`` (device threads call it); rich renders it through ``__rich__``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, DeviceStatus] = {}

    def update(self, status: DeviceStatus) -> None:
        with self._lock:
            self._rows[status.name] = status

    def __rich__(self) -> Table:
        table = Table(title="edgebench run", expand=False)
        for column in ("device", "state", "pushed", "jobs", "detail"):
            table.add_column(column, overflow="fold")
        with self._lock:
            rows = list(self._rows.values())
        for s in rows:
            style = _STATE_STYLE.get(s.state, "")
            jobs = f"{s.jobs_done}/{s.jobs_total}" if s.jobs_total else "-"
            if s.jobs_failed:
                jobs += f" ({s.jobs_failed} failed)"
            detail = s.reason if s.failed else s.detail
            table.add_row(s.name, f"[{style}]{s.state}[/]" if style else s.state, human_bytes(s.bytes_pushed),
                          jobs, detail or "")
        return table


def results_table(results: pd.DataFrame) -> Table:
    """The end-of-run table: device x model x variant x threads with p50, p90, speedup vs fp32, peak RSS,
    accuracy and status (from a results.parquet DataFrame). Reasons of jobs that are not ok are numbered
    notes under the table (each distinct reason once)."""
    table = Table(title="results")
    optional = _optional_columns(results)
    columns = ["device", "model", "variant", "threads", *[c for c, _ in optional], "p50 ms", "p90 ms", "speedup",
               "peak RSS MiB", "model MiB", "accuracy", "status"]
    for column in columns:
        left = column in ("device", "model", "variant", "status", "cpus", "xnnpack")
        table.add_column(column, justify="left" if left else "right", overflow="fold",
                         no_wrap=column == "status")
    sort = [c for c in ("device", "model", "variant", "threads", "xnnpack", "batch") if c in results]
    frame = results.sort_values(sort, na_position="last")
    notes: list[str] = []
    for row in frame.to_dict("records"):
        status, style = status_text(row, notes)
        table.add_row(
            str(row["device"]), str(row["model"]), str(row["variant"]), _num(row["threads"], "{:.0f}"),
            *[render(row) for _, render in optional],
            _num(row["p50_ms"]), _num(row["p90_ms"]), _num(row["speedup_vs_fp32"], "{:.2f}x"),
            _num(row["peak_rss_kb"] / 1024 if row["peak_rss_kb"] else None, "{:.1f}"),
            _num(row["model_peak_kb"] / 1024 if present(row.get("model_peak_kb")) else None, "{:.1f}"),
            accuracy_text(row), f"[{style}]{status}[/]",
        )
    if notes:
        table.caption = "\n".join(f"[{i}] {note}" for i, note in enumerate(notes, 1))
        table.caption_justify = "left"
    return table


def status_text(row: dict[str, Any], notes: list[str]) -> tuple[str, str]:
    """(text, style) of a row's status: ``ok`` green only when clean; ``ok (noisy, throttled)`` yellow
    when the measurement carries flags; a drift with its reason as a note; failures red with theirs."""
    status = row["status"] or "-"
    style = _STATUS_STYLE.get(row["status"], "red")
    if status != "ok" and row.get("error"):
        status = f"{status} [{_note(notes, row['error'])}]"
    flags = [f for f in str(row.get("flags") or "").split(",") if f and f != "drift"]
    if flags:
        status = f"{status} ({', '.join(flags)})"
        style = "yellow" if style == "green" else style
    if (present(row.get("drift")) and bool(row["drift"])) or "drift" in str(row.get("flags") or ""):
        status = f"{status}, drift [{_note(notes, row.get('drift_reasons') or 'drifted from fp32')}]"
        style = "yellow" if style == "green" else style
    return status, style


def _optional_columns(results: pd.DataFrame) -> list:
    """(title, render) of the columns a run only shows when it has them: the CPUs when a job ran on part
    of its device (or on a named cluster), XNNPACK when swept, the batch size of a batch sweep, energy."""
    def has(column: str) -> bool:
        return column in results and results[column].notna().any()

    optional = []
    pinned = has("affinity") and any(
        len(str(a).split(",")) < n for a, n in zip(results["affinity"], results["cpu_count"])
        if present(a) and present(n))
    if pinned or (has("cluster") and (results["cluster"].dropna() != "all").any()):
        optional.append(("cpus", lambda r: f"{r['affinity']} ({r['cluster']})" if present(r.get("affinity"))
                         else "-"))
    if "xnnpack" in results and results["xnnpack"].dropna().nunique() > 1:
        optional.append(("xnnpack", lambda r: {True: "on", False: "off"}.get(r.get("xnnpack"), "-")))
    if has("batch"):
        optional.append(("batch", lambda r: _num(r.get("batch"), "{:.0f}")))
    if has("mj_per_inference"):
        optional.append(("mJ/inf", lambda r: _num(r.get("mj_per_inference"), "{:.3f}")))
    return optional


def _note(notes: list[str], text: str) -> int:
    """The number of ``text`` among the table's notes (added once)."""
    if text not in notes:
        notes.append(text)
    return notes.index(text) + 1


def accuracy_text(row: dict[str, Any]) -> str:
    """Top-1 when labels were given; for the other variants the cosine similarity and the RMSE vs fp32
    (the RMSE shows drift that a cosine rounded to 4 places hides)."""
    parts = []
    if present(row.get("top1")):
        parts.append(f"top1 {row['top1'] * 100:.1f}%")
    if row["variant"] != "fp32":
        if present(row.get("cosine_vs_fp32")):
            parts.append(f"cos {row['cosine_vs_fp32']:.4f}")
        if present(row.get("rmse_vs_fp32")):
            parts.append(f"rmse {row['rmse_vs_fp32']:.1e}")
    return ", ".join(parts) or "-"


def _daemon_cell(beat: dict[str, Any] | None) -> str:
    """The daemon's heartbeat in a few words ("-" for a one-shot device)."""
    if beat is None:
        return "-"
    if not beat.get("running"):
        return f"[yellow]{beat.get('reason') or 'not running'}[/]"
    hours = (beat.get("uptime_s") or 0) / 3600
    parts = [f"up {hours:.1f} h", f"queue {beat.get('queue_length')}"]
    if beat.get("job"):
        parts.append(f"running {beat['job']}")
    if beat.get("temp_c") is not None:
        parts.append(f"{beat['temp_c']:.0f} °C")
    if beat.get("loadavg"):
        parts.append(f"load {beat['loadavg'][0]:.2f}")
    return ", ".join(parts)


def devices_table(rows: Iterable[dict[str, Any]], checked: bool) -> Table:
    """``edgebench devices``: one line per device; with ``checked`` the facts read from it."""
    table = Table(title="devices")
    columns = ["device", "transport", "address", "tags", "workdir"]
    if checked:
        columns += ["status", "arch", "python", "runtimes", "cores", "memory", "temp", "disk free", "agent",
                    "daemon"]
    for column in columns:
        table.add_column(column, overflow="fold")
    notes: list[str] = []
    for row in rows:
        cells = [row["name"], row["transport"], row.get("address") or "-", ",".join(row.get("tags") or []),
                 row["workdir"]]
        if checked:
            check = row.get("check") or {}
            if not check.get("reachable"):
                notes.append(f"{row['name']}: {check.get('reason', 'unreachable')}")
                cells += [f"[red]unusable [{len(notes)}][/]"] + ["-"] * 9
            else:
                runtimes = ", ".join(f"{r['name']} {r.get('version')}" if r.get("ok") else f"{r['name']} (no)"
                                     for r in check.get("runtimes") or [])
                mem = check.get("mem_total_kb")
                disk = check.get("disk_free_kb")
                cells += ["[green]reachable[/]", str(check.get("arch") or "-"), str(check.get("python") or "-"),
                          runtimes or "-", _num(check.get("cpu_count"), "{}"),
                          _num(mem / 1024 / 1024 if mem else None, "{:.1f} GiB"),
                          _num(check.get("temp_c"), "{:.0f} °C"),
                          _num(disk / 1024 / 1024 if disk else None, "{:.1f} GiB"),
                          str(check.get("agent_version") or "-"), _daemon_cell(check.get("daemon"))]
        table.add_row(*cells)
    if notes:
        table.caption = "\n".join(f"[{i}] {note}" for i, note in enumerate(notes, 1))
        table.caption_justify = "left"
    return table


def execute_with_board(devices: list, models: list, options: Any, inventory_path: str, *, live: bool,
                       notify: Callable[[DeviceStatus], None] | None = None, **info: Any):
    """:func:`controller.fleet.run.execute` with the live :class:`FleetBoard` on stderr when ``live``;
    otherwise progress goes to ``notify`` only (None: nowhere). ``info``: more run.json keys. Returns
    what ``execute`` returns, raises what it raises."""
    from rich.live import Live

    from controller.console import console
    from controller.fleet.run import execute

    if not live:
        return execute(devices, models, options, inventory_path, notify, **info)
    board = FleetBoard()
    err = console(stderr=True)
    with Live(board, console=err, refresh_per_second=4, transient=False):
        outcome = execute(devices, models, options, inventory_path, board.update, **info)
    if not err.is_terminal:
        err.print()  # rich leaves the last render of a non-terminal Live without a newline
    return outcome


def log_progress(logger_name: str) -> Callable[[DeviceStatus], None]:
    """A progress callback that logs one INFO line per device state change to ``logger_name`` (for runs
    without a terminal: cron, systemd)."""
    import logging

    log = logging.getLogger(logger_name)
    last: dict[str, tuple] = {}

    def notify(status: DeviceStatus) -> None:
        seen = (status.state, status.detail if status.state != "running" else "")
        if last.get(status.name) != seen:
            last[status.name] = seen
            reason = f" ({status.kind}: {status.reason})" if status.reason else ""
            log.info("%s: %s %s%s", status.name, status.state, status.detail, reason)
    return notify
