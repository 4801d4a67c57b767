"""The report of one run: one table per model (model x device x threads x variant) + figures, as a
self-contained HTML file, Markdown for a PR or chat, and CSV with every column.

:func:`write_report` is what the ``report`` and ``nightly`` commands call. The numbers come from the run
folder (:func:`controller.history.frame.report_frame`); trend lines from the history index; the
optional baseline run adds ``p50_vs_baseline`` (this p50 / the baseline's, for the same device, model,
variant and threads on the same device fingerprint).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from controller.defaults import OUT_DIR
from controller.errors import InputError
from controller.fleet.store import present

FORMATS = ("html", "md", "csv")
TREND_RUNS = 60  #: trend lines show this run and the indexed runs before it, at most this many

#: (column, header, formatter name) of the tables, in order. ``p50_vs_baseline`` only with a baseline.
TABLE = (
    ("device", "device", "text"), ("threads", "threads", "int"), ("variant", "variant", "text"),
    ("status", "status", "text"), ("flags", "flags", "text"),  # first: never behind a scroll bar
    ("p50_ms", "p50 ms", "ms"), ("p90_ms", "p90 ms", "ms"), ("p99_ms", "p99 ms", "ms"), ("cv", "CV", "pct"),
    ("speedup_vs_fp32", "speedup", "times"), ("p50_vs_baseline", "vs baseline", "change"),
    ("model_bytes", "size", "bytes"), ("size_ratio_vs_fp32", "size vs fp32", "times"),
    ("peak_rss_kb", "peak MiB", "mib"), ("model_peak_kb", "model MiB", "mib"), ("init_ms", "init ms", "ms"), ("first_inference_ms", "1st inf ms", "ms"),
    ("top1", "top-1", "pct"), ("cosine_vs_fp32", "cosine", "cos"), ("max_abs_vs_fp32", "max abs", "sci"),
    ("rmse_vs_fp32", "RMSE", "sci"),
)


#: what each flag means, said next to the flagged jobs (only the flags that occur)
FLAG_MEANINGS = {
    "noisy": "std/mean of the timings ≥ 10 % (within a process or between processes)",
    "throttled": "the throttle canary ran > 1.10× slower after the job than before, or the firmware said so",
    "drift": "accuracy vs fp32 past its threshold",
    "partial": "the max-seconds cap stopped the timed runs early",
}


def flag_legend(flagged: pd.DataFrame) -> str:
    """'noisy: ...; drift: ...' for the flags present in ``flagged`` (a report frame's rows), in the
    order of :data:`FLAG_MEANINGS`; unknown flags are named without a meaning."""
    present = {f for text in flagged["flags"] for f in str(text).split(",") if f}
    known = [f"{f}: {m}" for f, m in FLAG_MEANINGS.items() if f in present]
    return "; ".join(known + sorted(present - set(FLAG_MEANINGS)))


@dataclass
class ReportData:
    """Everything a report shows, read once."""

    run_dir: Path
    info: dict[str, Any]  #: run.json
    frame: pd.DataFrame  #: report_frame of the run (+ p50_vs_baseline)
    baseline_id: str | None
    history: pd.DataFrame | None  #: index rows of this run's series (None: no index / no history)

    @property
    def run_id(self) -> str:
        return str(self.info.get("run_id") or self.run_dir.name)

    def models(self) -> list[str]:
        return list(dict.fromkeys(str(m) for m in self.frame["model"].dropna()))

    def flagged(self) -> pd.DataFrame:
        return self.frame[self.frame["flags"] != ""]

    def failed(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] != "ok"]


def load(run_dir: str | os.PathLike, baseline: str | os.PathLike | None = None,
         out_dir: str | os.PathLike | None = None, store_url: str | None = None) -> ReportData:
    """Read the run (and the baseline run, and the history of its series when an index exists).
    Raises InputError when ``run_dir`` or ``baseline`` is not a run folder."""
    from controller.fleet.store import load_results
    from controller.history.frame import report_frame, resolve_run, run_meta

    run_dir = resolve_run(run_dir, out_dir or OUT_DIR)
    meta = run_meta(run_dir)
    with open(run_dir / "run.json", encoding="utf-8") as fh:
        info = json.load(fh)
    frame = report_frame(load_results(str(run_dir)))
    baseline_id = None
    frame["p50_vs_baseline"] = None
    if baseline is not None:
        base_dir = resolve_run(baseline, out_dir or run_dir.parent)
        baseline_id = run_meta(base_dir)["run_id"]
        frame["p50_vs_baseline"] = _vs_baseline(frame, load_results(str(base_dir)))
    history = _history(frame, meta["created"], out_dir or run_dir.parent, store_url)
    return ReportData(run_dir, info, frame, baseline_id, history)


def _vs_baseline(frame: pd.DataFrame, base: pd.DataFrame) -> list[float | None]:
    """This p50 / the baseline's p50 for ok rows of the same device, model, variant, threads and device
    fingerprint (None where there is no such baseline row)."""
    keys = ("device", "model", "variant", "threads", "device_fingerprint")
    ok = base[(base["status"] == "ok") & base["p50_ms"].notna()]
    reference = {tuple(r[k] for k in keys): r["p50_ms"] for r in ok.to_dict("records")}
    out = []
    for row in frame.to_dict("records"):
        ref = reference.get(tuple(row[k] for k in keys))
        ok_row = row["status"] == "ok" and present(row["p50_ms"])
        out.append(row["p50_ms"] / ref if ok_row and ref else None)
    return out


def _history(frame: pd.DataFrame, created, out_dir: str | os.PathLike,
             store_url: str | None) -> pd.DataFrame | None:
    """Index rows of the series this run belongs to (same device, model, variant, threads and device
    fingerprint) in the last TREND_RUNS runs made up to ``created`` (this run's time) that have rows of
    its models and devices, or None when there is no index."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from controller.history.frame import SERIES_KEYS
    from controller.history.index import open_index, store_url_of
    from controller.history.parquet_store import FOLDER

    if not store_url_of(store_url) and not (Path(out_dir) / FOLDER / "runs.parquet").is_file():
        return None
    keys = list(SERIES_KEYS)
    where = {"model": sorted(set(frame["model"].dropna())), "device": sorted(set(frame["device"]))}
    with open_index(out_dir, store_url) as index:
        runs = index.results_table(["run_id", "created"], **where)
        runs = runs.filter(pc.less_equal(runs["created"], pa.scalar(created, runs.schema.field("created").type)))
        runs = runs.group_by("run_id").aggregate([("created", "max")]).sort_by("created_max")
        recent = runs["run_id"].to_pylist()[-TREND_RUNS:]
        rows = index.results(keys + ["run_id", "created", "status", "p50_ms"], run_id=recent, **where)
    wanted = frame[keys].drop_duplicates()
    return rows.merge(wanted.astype({k: rows[k].dtype for k in keys}), on=keys).sort_values(
        ["created", "run_id"], kind="stable").reset_index(drop=True)


def write_report(run_dir: str | os.PathLike, formats: tuple[str, ...] | list[str] = FORMATS,
                 dest: str | os.PathLike | None = None, baseline: str | os.PathLike | None = None,
                 out_dir: str | os.PathLike | None = None, store_url: str | None = None) -> list[Path]:
    """Write ``report.<format>`` for each of ``formats`` (html, md, csv) into ``dest`` (default: the run
    folder) and return their paths in that order. ``baseline``: a run folder or id to compare p50 with;
    ``out_dir`` / ``store_url``: where the history index is (default: the run folder's parent, embedded).
    Raises InputError for an unknown format or a folder that is not a run, StoreError when a given
    store cannot be read."""
    from controller.fleet.store import atomic_write

    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(f"--format {','.join(formats)}: choose from {', '.join(FORMATS)}")
    data = load(run_dir, baseline, out_dir, store_url)
    folder = Path(dest) if dest is not None else data.run_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the report folder {folder}: {exc}; choose another --dest") from exc
    paths = []
    for fmt in formats:
        if fmt == "html":
            from controller.history.report_html import render_html

            text = render_html(data)
        elif fmt == "md":
            text = render_markdown(data)
        else:
            text = render_csv(data)
        path = folder / f"report.{fmt}"
        atomic_write(str(path), text.encode("utf-8"))
        paths.append(path)
    return paths


def columns(data: ReportData) -> list[tuple[str, str, str]]:
    """The table columns of this report (the baseline column only when there is a baseline)."""
    return [c for c in TABLE if c[0] != "p50_vs_baseline" or data.baseline_id]


def cell(value: Any, kind: str) -> str:
    """One table cell as text ("-" for missing)."""
    from controller.fleet.view import human_bytes

    if not present(value) or value == "":
        return "-"
    if kind == "text":
        return str(value)
    value = float(value)
    if kind == "int":
        return f"{value:.0f}"
    if kind == "ms":
        return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"
    if kind == "pct":
        return f"{value * 100:.1f}%"
    if kind == "times":
        return f"{value:.2f}×"
    if kind == "change":
        return f"{(value - 1) * 100:+.1f}%"
    if kind == "bytes":
        return human_bytes(int(value))
    if kind == "mib":
        return f"{value / 1024:.1f}"
    if kind == "cos":
        return f"{value:.5f}"
    return f"{value:.2g}"


def summary_lines(data: ReportData, model: str) -> list[str]:
    """A few plain sentences about one model: fastest and smallest variant per device, drift."""
    rows = data.frame[(data.frame["model"] == model) & (data.frame["status"] == "ok")]
    lines = []
    for (device, threads), group in rows.groupby(["device", "threads"], sort=False):
        timed = group[group["p50_ms"].notna()]
        if not len(timed):
            continue
        best = timed.loc[timed["p50_ms"].idxmin()]
        speed = f" ({cell(best['speedup_vs_fp32'], 'times')} fp32)" if present(best["speedup_vs_fp32"]) else ""
        lines.append(f"{device} · {threads}t: fastest {best['variant']} {cell(best['p50_ms'], 'ms')} ms{speed}")
    sized = rows[rows["model_bytes"].notna()].drop_duplicates("variant")
    if len(sized):
        small = sized.loc[sized["model_bytes"].idxmin()]
        lines.append(f"smallest: {small['variant']} {cell(small['model_bytes'], 'bytes')} "
                     f"({cell(small['size_ratio_vs_fp32'], 'times')} fp32)")
    drifted = sorted({v for v, f in zip(rows["variant"], rows["flags"]) if "drift" in f.split(",")})
    if drifted:
        lines.append(f"accuracy drift vs fp32: {', '.join(drifted)}")
    return lines


def render_markdown(data: ReportData) -> str:
    """The report as Markdown: a headline, flags and failures first, then one table per model."""
    info = data.info
    lines = [f"## edgebench run {data.run_id}", ""]
    devices = sorted((info.get("devices") or {}).keys())
    lines.append(f"{info.get('created', '?')} · {len(devices)} device(s): {', '.join(devices) or '-'} · "
                 f"exit code {info.get('exit_code', '?')}" + (f" · baseline {data.baseline_id}" if data.baseline_id else ""))
    lines.append("")
    flagged, failed = data.flagged(), data.failed()
    if len(failed):
        lines.append(f"**{len(failed)} job(s) not ok:**")
        for row in failed.to_dict("records"):
            lines.append(f"- {row['device']} {row['model']} {row['variant']} t{row['threads']}: "
                         f"**{row['status']}** — {_md(row.get('error') or row.get('error_kind') or 'no reason given')}")
        lines.append("")
    if len(flagged):
        lines.append(f"**{len(flagged)} job(s) flagged** ({_md(flag_legend(flagged))}):")
        for row in flagged.to_dict("records"):
            lines.append(f"- ⚠ {row['device']} {row['model']} {row['variant']} t{row['threads']}: "
                         f"**{row['flags'].replace(',', ', ')}**{_md(why(row))}")
        lines.append("")
    cols = columns(data)
    for model in data.models():
        lines += [f"### {model}", ""]
        lines += [f"- {s}" for s in summary_lines(data, model)] + [""]
        lines.append("| " + " | ".join(h for _, h, _ in cols) + " |")
        lines.append("|" + "|".join("---" if k == "text" else "---:" for _, _, k in cols) + "|")
        for row in data.frame[data.frame["model"] == model].to_dict("records"):
            cells = []
            for name, _, kind in cols:
                text = _md(cell(row.get(name), kind))
                if name == "flags" and text != "-":
                    text = f"⚠ **{text}**"
                elif name == "status" and text != "ok":
                    text = f"**{text}**"
                cells.append(text)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def render_csv(data: ReportData) -> str:
    """Every column of the report frame (table columns first), one row per job."""
    first = [name for name, _, _ in columns(data) if name in data.frame.columns]
    ordered = ["model"] + [c for c in first if c != "model"]
    rest = [c for c in data.frame.columns if c not in ordered]
    frame = data.frame[ordered + rest].copy()
    for name in frame.columns:  # list/array cells (a run's own flags column) as text
        if frame[name].map(lambda v: isinstance(v, (list, tuple)) or hasattr(v, "tolist")).any():
            frame[name] = frame[name].map(lambda v: ",".join(map(str, v)) if hasattr(v, "__iter__")
                                          and not isinstance(v, str) else v)
    return frame.to_csv(index=False)


def why(row: dict[str, Any]) -> str:
    """' — <the run's drift reasons>' for a drifted row that has them, else ''."""
    reasons = row.get("drift_reasons")
    if "drift" in str(row.get("flags") or "").split(",") and isinstance(reasons, str) and reasons:
        return f" — {reasons}"
    return ""


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
