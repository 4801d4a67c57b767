"""The report as ONE self-contained HTML file: inline CSS, figures as base64 PNG, no script, no link
to anything outside the file (it can be mailed, attached to a CI job or opened offline)."""

from __future__ import annotations

import base64
import html
from typing import Any

from controller.history import plot_workers, plots
from controller.history.report import ReportData, cell, columns, flag_legend, summary_lines, why

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1340px;margin:0 auto;padding:24px 24px 48px;background:#fff;min-height:100vh}
h1{font-size:24px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px;color:#57606a}
.meta{color:#57606a;font-size:13px;margin-bottom:14px}.meta b{color:#1f2328}
.box{border-radius:6px;padding:10px 14px;margin:10px 0;font-size:14px}
.box ul{margin:4px 0 0 18px;padding:0}.bad{background:#ffebe9;border:1px solid #ff8182}
.warn{background:#fff8c5;border:1px solid #d4a72c}.good{background:#dafbe1;border:1px solid #4ac26b}
table{border-collapse:collapse;font-size:12px;width:100%;margin:6px 0 4px}
.scroll{overflow-x:auto}
th{background:#f6f8fa;text-align:right;padding:5px 5px;border-bottom:2px solid #d0d7de;white-space:nowrap}
td{text-align:right;padding:4px 5px;border-bottom:1px solid #eaeef2;font-variant-numeric:tabular-nums;white-space:nowrap}
th.t,td.t{text-align:left}tr:hover td{background:#f6f8fa}
tr.fp32 td{color:#57606a}tr.notok td{background:#fff5f5}
.flag{display:inline-block;background:#d4a72c;color:#fff;border-radius:10px;padding:0 7px;margin-right:3px;font-size:11.5px;font-weight:600}
.flag.drift{background:#cf222e}.flag.throttled{background:#bc4c00}.flag.partial{background:#8250df}
.st{font-weight:600}.st.ok{color:#1a7f37}.st.bad{color:#cf222e}
.up{color:#cf222e}.down{color:#1a7f37}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:18px 28px;margin-top:14px;align-items:start}
figure{margin:0;max-width:100%}figure.wide{grid-column:1/-1}figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:12.5px;color:#57606a;margin-top:2px}
.empty{color:#57606a;font-style:italic;font-size:13px}
.summary{margin:4px 0 8px 18px;padding:0;font-size:14px}
.err{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;white-space:pre-wrap;text-align:left}
footer{margin-top:40px;font-size:12px;color:#57606a}
"""


def render_html(data: ReportData) -> str:
    """The whole report page."""
    e = html.escape
    info = data.info
    devices = info.get("devices") or {}
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>edgebench report {e(data.run_id)}</title>",
             '<meta name="viewport" content="width=device-width,initial-scale=1">',
             f"<style>{CSS}</style></head><body><main>",
             f"<h1>edgebench report · run {e(data.run_id)}</h1>",
             f'<div class="meta">{_meta(data)}</div>']
    parts.append(_alerts(data))
    figures = _Figures()
    for model in data.models():
        parts.append(_model_section(data, model, figures))
    failed = data.failed()
    if len(failed):
        parts.append(_failures(failed))
    settings = dict(info.get("settings") or {})
    for key, value in (settings.pop("job", None) or {}).items():  # the JobSpec settings of newer runs
        settings.setdefault(key, value)
    settings.update({f"drift {k}": v for k, v in (settings.pop("thresholds", None) or {}).items()})
    shown = ", ".join(f"{k}={v}" for k, v in settings.items() if k in (
        "runs", "warmup", "min_seconds", "max_seconds", "seed", "shuffle_seed", "drift top1_drop",
        "drift min_cosine") or k == "threads" and isinstance(v, list))
    states = ", ".join(f"{name} ({device.get('state', '?')})" for name, device in devices.items())
    parts.append(f"<footer>run folder {e(str(data.run_dir))} · devices: {e(states)} · settings: "
                 f"{e(shown)} · edgebench {e(str(info.get('tool_version', '?')))}</footer>")
    parts.append("</main></body></html>")
    return figures.fill("\n".join(parts))


def _meta(data: ReportData) -> str:
    e = html.escape
    info = data.info
    models = data.models()
    bits = [f"<b>{e(str(info.get('created', '?')))}</b>",
            f"{len(info.get('devices') or {})} device(s)", f"model(s): {e(', '.join(models) or '-')}",
            f"{len(data.frame)} job(s)", f"exit code {e(str(info.get('exit_code', '?')))}",
            f"controller {e(str(info.get('controller_host', '?')))}"]
    if info.get("kind") == "nightly":
        bits.insert(1, "<b>nightly</b>")
    if data.baseline_id:
        bits.append(f"baseline <b>{e(data.baseline_id)}</b>")
    return " · ".join(bits)


def _job(row: dict[str, Any]) -> str:
    return html.escape(f"{row['device']} · {row['model']} · {row['variant']} · {row['threads']}t")


def _alerts(data: ReportData) -> str:
    failed, flagged = data.failed(), data.flagged()
    out = []
    if len(failed):
        items = "".join(f"<li>{_job(r)}: <b>{html.escape(str(r['status']))}</b> — "
                        f"{html.escape(str(r.get('error') or r.get('error_kind') or 'no reason given'))}</li>"
                        for r in failed.to_dict("records"))
        out.append(f'<div class="box bad"><b>{len(failed)} job(s) did not produce a result</b><ul>{items}</ul></div>')
    if len(flagged):
        items = "".join(f"<li>{_job(r)}: {_flags(r['flags'])}{html.escape(why(r))}</li>"
                        for r in flagged.to_dict("records"))
        out.append(f'<div class="box warn"><b>{len(flagged)} job(s) flagged</b> — '
                   f"{html.escape(flag_legend(flagged))}<ul>{items}</ul></div>")
    if not out:
        out.append(f'<div class="box good">all {len(data.frame)} job(s) ok, none flagged</div>')
    return "\n".join(out)


def _flags(text: str) -> str:
    return "".join(f'<span class="flag {html.escape(f)}">{html.escape(f)}</span>' for f in text.split(",") if f)


def _table(data: ReportData, model: str) -> str:
    cols = columns(data)
    head = "".join(f'<th class="t">{html.escape(h)}</th>' if k == "text" else f"<th>{html.escape(h)}</th>"
                   for _, h, k in cols)
    body = []
    for row in data.frame[data.frame["model"] == model].to_dict("records"):
        cells = []
        for name, _, kind in cols:
            value = row.get(name)
            text = html.escape(cell(value, kind))
            css = "t" if kind == "text" else ""
            if name == "flags":
                text = _flags(str(value or "")) or "-"
            elif name == "status":
                css += " st " + ("ok" if value == "ok" else "bad")
            elif name == "p50_vs_baseline" and text != "-":
                css += " up" if float(value) > 1.05 else " down" if float(value) < 0.95 else ""
            cells.append(f'<td class="{css.strip()}">{text}</td>')
        cls = " ".join(c for c in ("fp32" if row["variant"] == "fp32" else "",
                                   "notok" if row["status"] != "ok" else "") if c)
        body.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


_MEMORY_CAPTIONS = {
    "model_peak_kb": "Peak memory of the model (over the process's baseline after imports and input "
                     "preparation; the whole process's peak is the table's peak MiB)",
    "peak_rss_kb": "Peak memory (RSS of the job's whole process, inputs included: this run has no model peak)",
}


def _figure(png: bytes | None, alt: str, caption: str, empty: str) -> str:
    if png is None:
        return f'<p class="empty">{html.escape(caption)}: {html.escape(empty)}</p>'
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    wide = int.from_bytes(png[16:20], "big") > 700  # PNG IHDR width: a wide plot spans both columns
    cls = ' class="wide"' if wide else ""
    return (f'<figure{cls}><img alt="{html.escape(alt)}" src="{src}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


class _Figures:
    """The figures of every model section: planned while the page is laid out (a placeholder per figure),
    drawn together by :func:`controller.history.plot_workers.draw_all`, then put in place."""

    def __init__(self) -> None:
        self.calls: list[plot_workers.Call] = []
        self.texts: list[tuple[str, str, str]] = []

    def add(self, fn, args: tuple, alt: str, caption: str, empty: str) -> str:
        self.calls.append((fn, args))
        self.texts.append((alt, caption, empty))
        return f"<edgebench-figure {len(self.calls) - 1}>"  # escaped text never holds a "<"

    def fill(self, page: str) -> str:
        for i, (png, (alt, caption, empty)) in enumerate(zip(plot_workers.draw_all(self.calls), self.texts)):
            page = page.replace(f"<edgebench-figure {i}>", _figure(png, alt, caption, empty), 1)
        return page


def _model_section(data: ReportData, model: str, figures: _Figures) -> str:
    e = html.escape
    frame = data.frame[data.frame["model"] == model]
    summary = "".join(f"<li>{e(s)}</li>" for s in summary_lines(data, model))
    if not (frame["status"] == "ok").any():
        return (f"<section><h2>{e(model)}</h2>{_table(data, model)}<p class=\"empty\">No job of {e(model)} "
                "produced a result, so there is nothing to plot: see the reasons above.</p></section>")
    figs = [
        figures.add(plots.latency_bars, (frame,), f"{model} latency", "Latency per variant and device: bar = "
                    "p50, whisker = p90", "no successful job"),
        figures.add(plots.speedup_heatmap, (frame,), f"{model} speedup", "Speedup vs fp32 (fp32 p50 / p50; "
                    "green = faster)", "no fp32 result to compare with"),
        figures.add(plots.pareto, (frame,), f"{model} size latency accuracy", "Size × latency × accuracy "
                    "(ringed, dashed: the size/latency Pareto front per device)", "no successful job"),
        figures.add(plots.memory_bars, (frame,), f"{model} memory", _MEMORY_CAPTIONS[plots.memory_column(frame)],
                    "no memory figures"),
    ]
    history = None if data.history is None else data.history[data.history["model"] == model]
    if history is None:
        figs.append('<p class="empty">Trend: no history index yet (it is built at the end of each run, or by '
                    "<code>edgebench history --rebuild</code>).</p>")
    else:
        runs = history["run_id"].nunique()
        caption = f"p50 over the history of these jobs (the last {runs} runs; this run ringed)" if runs > 1 else "Trend"
        figs.append(figures.add(plots.trend_lines, (history, data.run_id), f"{model} trend", caption,
                                "only this run so far — trend lines appear with the next one"))
    return (f"<section><h2>{e(model)}</h2><ul class=\"summary\">{summary}</ul>{_table(data, model)}"
            f"<div class=\"figs\">{''.join(figs)}</div></section>")


def _failures(failed) -> str:
    rows = "".join(
        f"<tr><td class=\"t\">{_job(r)}</td><td class=\"t st bad\">{html.escape(str(r['status']))}</td>"
        f"<td class=\"t\">{html.escape(str(r.get('error_kind') or '-'))}</td>"
        f"<td class=\"err\">{html.escape(str(r.get('error') or '-'))}</td></tr>"
        for r in failed.to_dict("records"))
    return ("<section><h2>Jobs that did not produce a result</h2><table><thead><tr><th class=\"t\">job</th>"
            "<th class=\"t\">status</th><th class=\"t\">kind</th><th class=\"t\">reason</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")
