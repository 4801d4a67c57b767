"""The report's figures (matplotlib, Agg backend, no pyplot state), each returned as PNG bytes.

Every function takes the report frame of one model (:func:`controller.history.frame.report_frame` rows
of that model) and returns PNG bytes, or None when there is nothing to draw (no ok rows, no fp32 to
compare with, no history yet), so the report can say so instead of showing an empty axis.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

VARIANT_COLORS = {"fp32": "#4C72B0", "fp16": "#DD8452", "dynamic": "#55A868", "int8": "#8172B3"}
OTHER_COLOR = "#937860"
DPI = 100
PAD_INCHES = 0.08  #: white margin around what is drawn
PNG_COMPRESSION = 3  #: zlib level: the default 6 costs more time than the few KB it saves


def _figure(width: float, height: float) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    # no layout engine: cropping to the drawn box (_png) costs less than constrained layout's iterations
    return Figure(figsize=(width, height), dpi=DPI)


def _png(fig: Figure) -> bytes:
    """The figure as PNG, fitted to what it shows plus a small margin, like savefig's
    ``bbox_inches="tight"`` but with one draw instead of two (that was half of the HTML report's time):
    the box of everything drawn is measured without drawing, the figure is resized to it (each axes kept
    at its size in inches, moved by the box's offset: labels that stuck out are brought in) and drawn once.
    Made for this module's figures: axes that share a position (twinx pairs) and figure-level artists
    (suptitle, fig.legend) are not moved."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    box = fig.get_tightbbox(canvas.get_renderer()).padded(PAD_INCHES)
    width, height = fig.get_size_inches()
    for ax in fig.axes:
        pos = ax.get_position()
        ax.set_position([(pos.x0 * width - box.x0) / box.width, (pos.y0 * height - box.y0) / box.height,
                         pos.width * width / box.width, pos.height * height / box.height])
    fig.set_size_inches(box.width, box.height)
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), memoryview(canvas.buffer_rgba()), "raw", "RGBA", 0, 1)
    buf = io.BytesIO()
    image.save(buf, format="png", compress_level=PNG_COMPRESSION)
    return buf.getvalue()


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def _groups(frame: pd.DataFrame) -> list[str]:
    """'device · Nt' labels in the frame's order."""
    return list(dict.fromkeys(f"{d} · {t}t" for d, t in zip(frame["device"], frame["threads"])))


def _bar_width(groups: list[str], variants: list[str]) -> float:
    """Inches: room for every bar up to a page's width (12 in), then the bars get thinner."""
    return min(12.0, max(5.5, 0.5 * len(groups) * max(1, len(variants)) + 2))


def _group_ticks(ax, groups: list[str]) -> None:
    """Group labels under the bars; slanted when there are many."""
    if len(groups) > 6:
        ax.set_xticks(range(len(groups)), groups, rotation=45, ha="right", fontsize=8)
    else:
        ax.set_xticks(range(len(groups)), groups)


def _variants(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["variant"]))


def _variant_bars(ok: pd.DataFrame, height: float, ylabel: str, legend_y: float,
                  bar: Callable[[Any, list[float], pd.DataFrame, float, str], None]) -> bytes:
    """A bar per variant in each device x threads group of ``ok`` (rows to draw): ``bar(ax, xs, rows, width,
    variant)`` draws one variant's bars (``rows``: its rows, at ``xs``)."""
    groups, variants = _groups(ok), _variants(ok)
    fig = _figure(_bar_width(groups, variants), height)
    ax = fig.add_subplot()
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        rows = ok[ok["variant"] == variant]
        xs = [groups.index(f"{d} · {t}t") - 0.4 + width * (i + 0.5) for d, t in zip(rows["device"], rows["threads"])]
        bar(ax, xs, rows, width * 0.92, variant)
    _group_ticks(ax, groups)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, ncols=min(4, len(variants)), loc="upper left", bbox_to_anchor=(0, legend_y))
    _style(ax)
    return _png(fig)


def latency_bars(frame: pd.DataFrame) -> bytes | None:
    """p50 bars per variant, grouped by device x threads, with a whisker up to p90."""
    ok = frame[(frame["status"] == "ok") & frame["p50_ms"].notna()]
    if not len(ok):
        return None

    def bar(ax, xs: list[float], rows: pd.DataFrame, width: float, variant: str) -> None:
        p50 = rows["p50_ms"].astype(float)
        up = (rows["p90_ms"].astype(float).fillna(p50) - p50).clip(lower=0.0)
        ax.bar(xs, p50, width, color=VARIANT_COLORS.get(variant, OTHER_COLOR), label=variant,
               yerr=[[0.0] * len(up), list(up)], capsize=3, error_kw={"elinewidth": 1, "ecolor": "#333333"})

    return _variant_bars(ok, 3.4, "latency p50 ms (whisker: p90)", 1.18, bar)


def speedup_heatmap(frame: pd.DataFrame) -> bytes | None:
    """Speedup vs fp32 (fp32 p50 / p50), device x threads by variant, annotated."""
    import numpy as np

    ok = frame[frame["speedup_vs_fp32"].notna()]
    if not len(ok):
        return None
    groups, variants = _groups(ok), _variants(ok)
    grid = np.full((len(groups), len(variants)), np.nan)
    for device, threads, variant, speedup in zip(ok["device"], ok["threads"], ok["variant"], ok["speedup_vs_fp32"]):
        grid[groups.index(f"{device} · {threads}t"), variants.index(variant)] = speedup
    fig = _figure(min(6.2, 1.0 * len(variants) + 2.4), 0.45 * len(groups) + 1.3)
    ax = fig.add_subplot()
    spread = max(abs(math.log2(v)) for v in grid[~np.isnan(grid)]) or 1.0
    image = ax.imshow(np.log2(grid), cmap="RdYlGn", vmin=-spread, vmax=spread, aspect="auto")
    for (r, c), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(c, r, f"{value:.2f}×", ha="center", va="center", fontsize=9,
                    color="black" if abs(math.log2(value)) < spread * 0.6 else "white")
    ax.set_xticks(range(len(variants)), variants)
    ax.set_yticks(range(len(groups)), groups)
    ax.tick_params(length=0)
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    bar.set_label("speedup vs fp32 (log scale)")
    ticks = [t for t in (-3, -2, -1, 0, 1, 2, 3) if abs(t) <= spread] or [0]
    bar.set_ticks(ticks, labels=[f"{2.0 ** t:g}×" for t in ticks])
    return _png(fig)


def pareto(frame: pd.DataFrame) -> bytes | None:
    """Size x latency x accuracy: one point per ok row (x file size, y p50, colour = variant, marker =
    device x threads when there are at most 6 of them); each variant's accuracy (top-1, else cosine vs
    fp32) is in its legend entry, so labels never pile up on points that sit together; the size/latency
    Pareto front of each device x threads ringed in grey and joined by a dashed step line."""
    ok = frame[(frame["status"] == "ok") & frame["p50_ms"].notna() & frame["model_bytes"].notna()]
    if not len(ok):
        return None
    fig = _figure(6.2, 3.8)
    ax = fig.add_subplot()
    groups = _groups(ok)
    few = len(groups) <= 6
    markers = "osD^vP"
    keys = [f"{d} · {t}t" for d, t in zip(ok["device"], ok["threads"])]
    for variant in _variants(ok):
        mask = (ok["variant"] == variant).to_numpy()
        rows = ok[mask]
        for g, group in enumerate(groups if few else ["all"]):
            sel = rows if not few else rows[[k == group for k, m in zip(keys, mask) if m]]
            if not len(sel):
                continue
            label = f"{variant}{_accuracy_label(rows)}" if g == 0 else None
            ax.scatter(sel["model_bytes"].astype(float) / 1e6, sel["p50_ms"], c=VARIANT_COLORS.get(variant, OTHER_COLOR),
                       marker=markers[g % len(markers)] if few else "o", s=60 if few else 25, edgecolors="black",
                       linewidths=0.5, zorder=3, label=label)
    if few:
        for group in groups:
            front = ok[[k == group for k in keys]].sort_values(["model_bytes", "p50_ms"])
            best, xs, ys = math.inf, [], []
            for size, p50 in zip(front["model_bytes"].astype(float) / 1e6, front["p50_ms"]):
                if p50 < best:
                    best = p50
                    xs.append(size)
                    ys.append(p50)
            if len(xs) > 1:
                ax.step(xs, ys, where="post", color="#999999", linewidth=1, linestyle="--", zorder=1)
            # ringed too: a front of one point (one variant smaller AND faster than all) has no line
            ax.scatter(xs, ys, s=220, facecolors="none", edgecolors="#888888", linewidths=1.2, zorder=2)
            ax.scatter([], [], marker=markers[groups.index(group) % len(markers)], facecolors="white",
                       edgecolors="black", label=group)
    ax.set_xlabel("model file size MB")
    ax.set_ylabel("latency p50 ms")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0, right=float(ok["model_bytes"].max()) / 1e6 * 1.15)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    _style(ax)
    return _png(fig)


def _accuracy_label(rows: pd.DataFrame) -> str:
    """' · top-1 96.4%' (the variant's rows; a range when devices differ), else ' · cos 0.9999' vs fp32,
    else ''."""
    for column, text in (("top1", "top-1 {:.1f}%"), ("cosine_vs_fp32", "cos {:.4f}")):
        values = rows[column].dropna().astype(float) if column in rows else []
        if column == "cosine_vs_fp32" and len(rows) and (rows["variant"] == "fp32").all():
            return ""
        if len(values):
            scale = 100 if column == "top1" else 1
            lo, hi = text.format(values.min() * scale), text.format(values.max() * scale)
            return f" · {lo}" if lo == hi else f" · {lo}-{hi.split()[-1]}"
    return ""


def memory_column(frame: pd.DataFrame) -> str:
    """The memory figure the plot shows: ``model_peak_kb`` (the peak over the baseline after imports and
    input preparation, i.e. what belongs to the model) when every job with a process peak has it, else
    ``peak_rss_kb`` (the whole process, inputs included: older run folders)."""
    ok = frame[frame["peak_rss_kb"].notna()] if "peak_rss_kb" in frame.columns else frame.iloc[0:0]
    if "model_peak_kb" in frame.columns and len(ok) and ok["model_peak_kb"].notna().all():
        return "model_peak_kb"
    return "peak_rss_kb"


def memory_bars(frame: pd.DataFrame) -> bytes | None:
    """Peak memory MiB per variant (the column :func:`memory_column` picks), grouped by device x threads."""
    column = memory_column(frame)
    ok = frame[frame[column].notna()] if column in frame.columns else frame.iloc[0:0]
    if not len(ok):
        return None

    def bar(ax, xs: list[float], rows: pd.DataFrame, width: float, variant: str) -> None:
        ax.bar(xs, rows[column].astype(float) / 1024, width, color=VARIANT_COLORS.get(variant, OTHER_COLOR),
               label=variant)

    ylabel = "model peak MiB" if column == "model_peak_kb" else "process peak RSS MiB"
    return _variant_bars(ok, 3.0, ylabel, 1.2, bar)


def trend_lines(history: pd.DataFrame, run_id: str) -> bytes | None:
    """p50 over time for each device x threads (one panel each, at most 4), a line per variant; this
    run's points ringed. ``history``: index rows of this model's series. None with fewer than two runs."""
    ok = history[(history["status"] == "ok") & history["p50_ms"].notna()]
    if ok["run_id"].nunique() < 2:
        return None
    groups = _groups(ok)[:4]
    # x = the run's position in time (evenly spaced: nightlies and ad-hoc runs bunch up on a time axis)
    order = ok.drop_duplicates("run_id").sort_values(["created", "run_id"])
    position = {run: i for i, run in enumerate(order["run_id"])}
    fig = _figure(6.2, 1.9 * len(groups) + 0.7)
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    fig.subplots_adjust(hspace=0.45)
    for ax, group in zip(axes, groups):
        rows = ok[[f"{d} · {t}t" == group for d, t in zip(ok["device"], ok["threads"])]]
        for variant in _variants(rows):
            line = rows[rows["variant"] == variant].sort_values(["created", "run_id"])
            color = VARIANT_COLORS.get(variant, OTHER_COLOR)
            xs = [position[r] for r in line["run_id"]]
            ax.plot(xs, line["p50_ms"], marker="o", markersize=3, color=color, label=variant)
            mine = line[line["run_id"] == run_id]
            ax.scatter([position[r] for r in mine["run_id"]], mine["p50_ms"], s=80, facecolors="none",
                       edgecolors=color, linewidths=1.5)
        ax.set_title(group, fontsize=9, loc="left")
        ax.set_ylabel("p50 ms")
        ax.set_ylim(bottom=0)
        _style(ax)
    step = max(1, len(order) // 8)
    ticks = list(range(0, len(order), step))
    axes[-1].set_xticks(ticks, [order["created"].iloc[i].strftime("%m-%d %H:%M") for i in ticks],
                        rotation=30, ha="right", fontsize=8)
    axes[-1].set_xlabel("run (oldest to newest)")
    axes[0].legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _png(fig)


def _ok(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))

