"""The per-op profile as people read it: share of each op, totals per op type, the sanity ratio.

The agent returns raw per-op timings (``doc["profile"]``, see :mod:`agent.profile`); this module turns
one result document into the summary ``edgebench profile --json`` prints and the tables it shows. The
share of an op is its p50 over the sum of the p50s of every timed op; the ratio is that sum over the
whole model's p50, measured in the same worker. Each single-op model pays the runtime's fixed cost of
one ``invoke()`` (about half a microsecond on a desktop x86 core), so on a model of sub-microsecond
ops the sum exceeds the whole; where ops take tens of microseconds the ratio is close to 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

#: a sum of op times outside this band of the model's p50 is called out (the tests hold to it too)
RATIO_BAND = (0.3, 3.0)


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """The summary of one profiled result document: ``ops`` (index, op, us, share, delegated, xnnpack,
    error, skipped, mean_us, min_us, count), ``by_type`` (op, count, us, share, delegated),
    ``sum_us``, ``model_p50_us``, ``ratio``, ``in_band``, plus what identifies the run (model, variant,
    device, runtime, threads, status, error). A document without a profile (a failed job) gives empty
    ``ops`` and null totals."""
    job = doc.get("job") or {}
    meta = job.get("meta") or {}
    runtime = doc.get("runtime") or {}
    profile = doc.get("profile") or {}
    ops = []
    total = profile.get("sum_us") or 0.0
    for raw in profile.get("ops") or []:
        us = raw.get("us")
        ops.append({"index": raw["index"], "op": raw.get("op"), "us": us,
                    "share": us / total if us is not None and total > 0 else None,
                    "delegated": raw.get("delegated"), "xnnpack": raw.get("xnnpack"),
                    "xnnpack_error": raw.get("xnnpack_error"), "error": raw.get("error"),
                    "skipped": raw.get("skipped"), "mean_us": raw.get("mean_us"), "min_us": raw.get("min_us"),
                    "count": raw.get("count")})
    ratio = profile.get("ratio")
    return {
        "model": meta.get("model_name") or job.get("model"), "variant": meta.get("variant"),
        "device": meta.get("device"), "runtime": runtime.get("name"), "runtime_version": runtime.get("version"),
        "threads": runtime.get("num_threads"), "delegates": runtime.get("delegates"),
        "status": doc.get("status"), "error": (doc.get("error") or {}).get("message"),
        "ops": ops, "by_type": by_type(ops), "sum_us": profile.get("sum_us"),
        "model_p50_us": profile.get("model_p50_us"), "ratio": ratio,
        "in_band": None if ratio is None else RATIO_BAND[0] <= ratio <= RATIO_BAND[1],
        "delegated_ops": sum(1 for o in ops if o["delegated"] is True),
        "cpu_ops": sum(1 for o in ops if o["delegated"] is False),
    }


def by_type(ops: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per op type: count, summed µs, share of the sum, how many of them the delegate took; largest first."""
    total = sum(o["us"] for o in ops if o["us"] is not None)
    groups: dict[str, dict[str, Any]] = {}
    for o in ops:
        g = groups.setdefault(o["op"], {"op": o["op"], "count": 0, "us": 0.0, "delegated": 0})
        g["count"] += 1
        g["us"] += o["us"] or 0.0
        g["delegated"] += int(o["delegated"] is True)
    rows = sorted(groups.values(), key=lambda g: (-g["us"], g["op"]))
    for g in rows:
        g["share"] = g["us"] / total if total > 0 else None
    return rows


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _delegated(value: bool | None) -> str:
    return {True: "XNNPACK", False: "CPU", None: "?"}[value]


def title(summary: dict[str, Any]) -> str:
    """``model variant on device (runtime version, N threads)``."""
    where = f" on {summary['device']}" if summary.get("device") else ""
    variant = f" {summary['variant']}" if summary.get("variant") not in (None, "-") else ""
    return (f"{summary['model']}{variant}{where} ({summary['runtime']} {summary['runtime_version']}, "
            f"{summary['threads']} thread(s))")


def ops_table(summary: dict[str, Any]) -> Table:
    """One row per op: index, op type, p50 µs, share, where it ran in the whole model, notes."""
    table = Table(title=title(summary), title_justify="left")
    for column, justify in (("#", "right"), ("op", "left"), ("µs (p50)", "right"), ("share", "right"),
                            ("runs on", "left"), ("note", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for o in summary["ops"]:
        note = o["error"] or o["skipped"] or ""
        if o["xnnpack_error"]:
            note = f"alone only on the CPU kernels ({o['xnnpack_error']})"
        table.add_row(str(o["index"]), o["op"], _us(o["us"]), _share(o["share"]), _delegated(o["delegated"]),
                      note)
    return table


def types_table(summary: dict[str, Any]) -> Table:
    """One row per op type: count, summed µs, share, how many the delegate took."""
    table = Table(title="per op type", title_justify="left")
    for column in ("op", "count", "µs", "share", "delegated"):
        table.add_column(column, justify="left" if column == "op" else "right")
    for g in summary["by_type"]:
        table.add_row(g["op"], str(g["count"]), _us(g["us"]), _share(g["share"]), f"{g['delegated']}/{g['count']}")
    return table


def ratio_line(summary: dict[str, Any]) -> str:
    """The sanity line: sum of op times vs the whole model's p50, and whether it is in the band."""
    if summary["ratio"] is None:
        return f"no profile: {summary.get('error') or summary.get('status')}"
    line = (f"sum of op times {_us(summary['sum_us'])} µs vs whole model p50 {_us(summary['model_p50_us'])} µs: "
            f"ratio {summary['ratio']:.2f}; {summary['delegated_ops']} op(s) delegated, {summary['cpu_ops']} on "
            "the CPU")
    if not summary["in_band"]:
        line += (f" - outside {RATIO_BAND[0]:g}-{RATIO_BAND[1]:g}: each op alone pays one invoke() and loses "
                 "the fusion of the whole graph; read the shares with care")
    return line


def brief(summary: dict[str, Any]) -> str:
    """One line: what was profiled, the ratio line, and the three op types that cost most."""
    top = ", ".join(f"{g['op']} {g['share']:.0%}" for g in summary["by_type"][:3] if g["share"] is not None)
    return f"{title(summary)}: {ratio_line(summary)}; top op types: {top or '-'}"


def variants_table(summaries: Sequence[dict[str, Any]]) -> Table:
    """Op type x profiled model: summed µs per type, so the ops that make one variant slower show."""
    table = Table(title="µs per op type and variant", title_justify="left")
    table.add_column("op")
    labels = [f"{s['model']} {s['variant']}" if s.get("variant") not in (None, "-") else str(s["model"])
              for s in summaries]
    for label in labels:
        table.add_column(label, justify="right")
    types = sorted({g["op"] for s in summaries for g in s["by_type"]})
    per = [{g["op"]: g["us"] for g in s["by_type"]} for s in summaries]
    for op in types:
        table.add_row(op, *[_us(p.get(op)) for p in per])
    table.add_row("sum", *[_us(s["sum_us"]) for s in summaries])
    table.add_row("model p50", *[_us(s["model_p50_us"]) for s in summaries])
    return table
