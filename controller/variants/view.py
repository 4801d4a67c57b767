"""What ``edgebench convert`` shows: a progress display on stderr while converting and calibrating,
then the table of variants (sizes, ratios) and the accuracy table, or one JSON document."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from controller.variants.convert import ConvertResult


class ProgressView:
    """A rich progress display: one bar over the variants, one for calibration / eval samples.
    ``update`` is the ``progress`` callback of :func:`controller.variants.convert.convert`."""

    def __init__(self, console: Console, variants: tuple[str, ...]):
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
        self.variants = variants
        self.main = None
        self.calib = None

    def __enter__(self) -> ProgressView:  # noqa: PYI034
        self.progress.__enter__()
        self.main = self.progress.add_task("converting", total=len(self.variants))
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, event: str, info: dict) -> None:
        if event == "variant":
            self.progress.update(self.main, description=f"converting {info['variant']}")
        elif event == "written":
            self.progress.advance(self.main)
        elif event == "calibrate":
            if self.calib is None:
                self.calib = self.progress.add_task("calibrating int8", total=info["total"])
            self.progress.update(self.calib, completed=info["done"])
        elif event == "eval":
            self.progress.update(self.main, description=f"evaluating {info['variant']}")


def _ratio(nbytes: int, ref: int | None) -> str:
    return f"{nbytes / ref:.2f}" if ref else "-"


def _io_text(ios: list[dict]) -> str:
    parts = []
    for io in ios:
        text = io["dtype"]
        if io.get("scale") is not None:
            text += f" (s={io['scale']:.4g}, zp={io['zero_point']})"
        parts.append(text)
    return ", ".join(parts)


def variants_table(result: ConvertResult) -> list[Any]:
    """Renderables: the variants table, then the accuracy table when there is one."""
    m = result.manifest
    ref = m.variants["fp32"].bytes if "fp32" in m.variants else None
    tools = sorted({f"{v.converter.get('name')} {v.converter.get('version') or ''}".strip()
                    for v in m.variants.values()})
    table = Table(title=f"{m.name}: {len(m.variants)} variant(s) in {m.folder} ({', '.join(tools)})")
    for col in ("variant", "bytes", "vs fp32", "input", "output", "min runtime"):
        table.add_column(col, justify="right" if col in ("bytes", "vs fp32") else "left")
    if result.compat:
        table.add_column(f"tflite-runtime {next(iter(result.compat.values())).runtime_version}")
    for name, v in m.variants.items():
        row = [name, f"{v.bytes:,}", _ratio(v.bytes, ref), _io_text(v.inputs), _io_text(v.outputs),
               v.min_runtime_version or "-"]
        if result.compat:
            c = result.compat.get(name)
            row.append("-" if c is None else ("loads" if c.ok else "NO: " + c.reasons[0]))
        table.add_row(*row)
    out: list[Any] = [table]
    if result.accuracy is not None:
        out.append(accuracy_table(result.accuracy))
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def accuracy_table(report) -> Table:
    """The accuracy table of a :class:`controller.variants.evaluate.AccuracyReport`."""
    t = report.thresholds
    table = Table(title=f"accuracy on {report.samples} samples ({'labelled' if report.labels else 'no labels'})"
                  f" - flagged when top-1 drops > {t.top1_drop:g} points or cosine < {t.min_cosine:g}")
    for col in ("variant", "top-1", "drop (pts)", "cosine", "max abs", "RMSE", "flag"):
        table.add_column(col, justify="left" if col in ("variant", "flag") else "right")
    for r in report.rows:
        if r.status != "ok":
            table.add_row(r.variant, "-", "-", "-", "-", "-", f"{r.status}: {r.error}")
            continue
        table.add_row(r.variant, _fmt(None if r.top1 is None else 100 * r.top1, ".1f"),
                      _fmt(r.top1_drop_points, "+.1f"), _fmt(r.cosine, ".4f"), _fmt(r.max_abs, ".3g"),
                      _fmt(r.rmse, ".3g"), "DRIFT: " + "; ".join(r.reasons) if r.flagged else "")
    return table


def result_document(result: ConvertResult) -> dict[str, Any]:
    """The ``--json`` document: manifest path and content, compat verdicts, accuracy, warnings."""
    m = result.manifest
    ref = m.variants["fp32"].bytes if "fp32" in m.variants else None
    doc = {"manifest": str(m.path), **m.to_dict()}
    for name, v in doc["variants"].items():
        v["ratio_vs_fp32"] = (m.variants[name].bytes / ref) if ref else None
    doc["compat"] = {k: c.to_dict() for k, c in result.compat.items()}
    doc["accuracy"] = result.accuracy.to_dict() if result.accuracy is not None else None
    doc["warnings"] = list(result.warnings)
    doc["failures"] = dict(result.failures)
    return doc



