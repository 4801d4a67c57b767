"""``edgebench report``: the files a person reads, from real run folders (fixture ``history_runs``)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from controller.history.frame import report_frame
from controller.history.report import write_report
from tests.browser import CHROMIUM, Browser
from tests.fixtures_history import run_cli

pytestmark = pytest.mark.slow  # the fixture measures three real runs


def copy_run(src: Path, dest_root: Path) -> Path:
    dest = dest_root / src.name
    shutil.copytree(src, dest)
    return dest


def test_report_last_writes_three_files_in_the_run_folder(history_runs):
    code, out, err = run_cli("report", "--last", "--out", str(history_runs.out))
    assert code == 0, err
    last = history_runs.runs[-1]
    assert out.split() == [str(last / "report.html"), str(last / "report.md"), str(last / "report.csv")]
    results = pd.read_parquet(last / "results.parquet")
    csv = pd.read_csv(last / "report.csv")
    assert len(csv) == len(results) == 5  # 4 variants + the skipped corrupt model
    # the numbers are the run's own, and the derived ones are computed from them
    merged = csv.merge(results[["variant", "model", "p50_ms", "std_ms", "mean_ms", "model_bytes"]],
                       on=["model", "variant"], suffixes=("", "_run"))
    assert (merged["p50_ms"] - merged["p50_ms_run"]).abs().max() < 1e-9
    ok = merged[merged["status"] == "ok"]
    assert ((ok["cv"] - ok["std_ms_run"] / ok["mean_ms_run"]).abs() < 1e-9).all()
    fp32_bytes = int(results.loc[results["variant"] == "fp32", "model_bytes"].iloc[0])
    int8 = ok[ok["variant"] == "int8"].iloc[0]
    assert int8["size_ratio_vs_fp32"] == pytest.approx(int8["model_bytes"] / fp32_bytes)
    assert 0.2 < int8["size_ratio_vs_fp32"] < 0.35
    for column in ("p90_ms", "p99_ms", "speedup_vs_fp32", "peak_rss_kb", "init_ms", "first_inference_ms",
                   "top1", "cosine_vs_fp32", "max_abs_vs_fp32", "rmse_vs_fp32", "status", "error", "flags"):
        assert column in csv.columns, column


def test_markdown_has_one_row_per_job_with_its_values_and_the_skipped_job_explained(history_runs):
    run = history_runs.runs[0]
    (md,) = write_report(run, ("md",), dest=run.parent / "md-only")
    text = md.read_text()
    results = report_frame(pd.read_parquet(run / "results.parquet"))
    for row in results[results["status"] == "ok"].to_dict("records"):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| local | 1 | {row['variant']} |"))
        assert f"| {row['p50_ms']:.3f} |" in line, line
        assert f"{row['top1'] * 100:.1f}%" in line
    skipped = results[results["status"] != "ok"].iloc[0]
    assert skipped["status"] == "skipped"
    assert f"**skipped** — {skipped['error']}" in text.replace("\\|", "|")
    assert "job(s) not ok" in text.splitlines()[4]  # said before the tables, not after


def test_html_opens_in_chromium_with_every_image_decoded(history_runs, tmp_path):
    assert Path(CHROMIUM).exists(), "Debian's chromium package is needed (scripts/system-deps.sh)"
    run = history_runs.runs[-1]
    (html,) = write_report(run, ("html",), dest=tmp_path)
    text = html.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained
    with Browser() as browser:
        browser.open(html)
        images = browser.evaluate("[...document.images].map(i => ({alt: i.alt, w: i.naturalWidth, "
                                  "h: i.naturalHeight, done: i.complete}))")
        resources = browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        headers = browser.evaluate("[...document.querySelectorAll('th')].map(t => t.textContent)")
        empty = browser.evaluate("[...document.querySelectorAll('.empty')].map(e => e.textContent)")
        alerts = browser.evaluate("[...document.querySelectorAll('.box')].map(e => e.textContent)")
        shot = browser.screenshot(tmp_path / "report.png")
    # each run was indexed when it ended: the trend lines are there too
    assert [i["alt"] for i in images] == ["demo latency", "demo speedup", "demo size latency accuracy",
                                          "demo memory", "demo trend"]
    for image in images:
        assert image["done"] and image["w"] > 300 and image["h"] > 150, image
    assert [r for r in resources if not r.startswith("data:")] == []
    for header in ("p50 ms", "p90 ms", "p99 ms", "CV", "speedup", "size vs fp32", "peak MiB", "init ms",
                   "1st inf ms", "top-1", "cosine", "max abs", "RMSE", "status", "flags"):
        assert header in headers
    assert len(empty) == 1 and empty[0].startswith("No job of bad_custom_op produced a result")  # no plots
    assert any("did not produce a result" in a and "skipped" in a for a in alerts)
    assert shot.stat().st_size > 50_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trend_plot_appears_once_the_history_is_indexed(history_runs, tmp_path):
    out = tmp_path / "reports"
    for run in history_runs.runs:
        copy_run(run, out)
    (html,) = write_report(out / history_runs.runs[-1].name, ("html",))
    assert "Trend: no history index yet" in html.read_text()  # copied folders: no index yet
    assert run_cli("history", "--rebuild", "--out", str(out))[0] == 0
    code, stdout, err = run_cli("report", "--out", str(out), "--format", "html", "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["run_dir"] == str((out / history_runs.runs[-1].name).resolve())
    with Browser() as browser:
        browser.open(Path(doc["files"][0]))
        images = browser.evaluate("[...document.images].map(i => [i.alt, i.naturalWidth])")
        caption = browser.evaluate("[...document.querySelectorAll('figcaption')].map(e => e.textContent)")
    assert ["demo trend"] == [a for a, w in images if a.endswith("trend") and w > 300]
    assert any("the last 3 runs" in c for c in caption)
    # the first run's report shows no later run: its history is itself alone
    (html,) = write_report(out / history_runs.runs[0].name, ("html",), dest=tmp_path / "first")
    assert "only this run so far" in html.read_text() and 'alt="demo trend"' not in html.read_text()


def test_flags_from_the_run_are_shown_and_drift_is_computed_when_the_run_has_none(history_runs, tmp_path):
    # A newer run folder has its own `flags` column (list of str per row): shown as they are.
    run = copy_run(history_runs.runs[0], tmp_path / "with-flags")
    frame = pd.read_parquet(run / "results.parquet")
    frame["flags"] = [["throttled", "noisy"] if v == "int8" else [] for v in frame["variant"]]
    frame.to_parquet(run / "results.parquet", index=False)
    html, md = write_report(run, ("html", "md"))
    assert "⚠ int8" not in md.read_text()  # flags are per job line:
    assert "local demo int8 t1: **noisy, throttled**" in md.read_text()
    assert '<span class="flag throttled">throttled</span>' in html.read_text()
    # The fleet's own drift verdict (with the run's thresholds) is shown with its reasons.
    run = copy_run(history_runs.runs[1], tmp_path / "fleet-drift")
    frame = pd.read_parquet(run / "results.parquet")
    fp16 = frame["variant"] == "fp16"
    frame.loc[fp16, "drift"] = True
    frame.loc[fp16, "drift_reasons"] = "cosine 0.9500 to fp32 < 0.99"
    frame.to_parquet(run / "results.parquet", index=False)
    (md,) = write_report(run, ("md",))
    (line,) = [ln for ln in md.read_text().splitlines() if ln.startswith("- ⚠ local demo fp16 t1: **")]
    assert "drift" in line and line.endswith("** — cosine 0.9500 to fp32 < 0.99")  # (noisy may be there too)
    # An older run folder (schema 1) has no flags and no drift column: drift from the default thresholds.
    run = copy_run(history_runs.runs[1], tmp_path / "drifted")
    frame = pd.read_parquet(run / "results.parquet")
    frame = frame.drop(columns=[c for c in ("flags", "drift", "drift_reasons") if c in frame.columns])
    frame.loc[frame["variant"] == "fp16", "cosine_vs_fp32"] = 0.95
    frame.to_parquet(run / "results.parquet", index=False)
    (md,) = write_report(run, ("md",))
    text = md.read_text()
    flagged = {ln.split(":")[0]: ln for ln in text.splitlines() if ln.startswith("- ⚠ ")}
    assert "drift" in flagged["- ⚠ local demo fp16 t1"] and "accuracy drift vs fp32: fp16" in text
    assert "drift" not in flagged.get("- ⚠ local demo int8 t1", "")


def test_baseline_adds_the_p50_change_per_job(history_runs, tmp_path):
    base, new = history_runs.runs[0], history_runs.runs[1]
    (csv,) = write_report(new, ("csv",), dest=tmp_path, baseline=base)
    frame = pd.read_csv(csv)
    base_p50 = pd.read_parquet(base / "results.parquet").set_index("variant")["p50_ms"]
    for row in frame[frame["status"] == "ok"].to_dict("records"):
        assert row["p50_vs_baseline"] == pytest.approx(row["p50_ms"] / base_p50[row["variant"]])
    assert frame.loc[frame["status"] != "ok", "p50_vs_baseline"].isna().all()
    (md,) = write_report(new, ("md",), dest=tmp_path, baseline=base)
    assert "vs baseline" in md.read_text() and base.name in md.read_text()


@pytest.mark.parametrize("argv, message", [
    (["report", "/nonexistent/run"], "not a run folder"),
    (["report", "--format", "pdf"], "--format takes"),
    (["report", "RUN", "--last"], "give RUN or --last, not both"),
])
def test_bad_report_arguments_exit_2_with_the_reason(argv, message, history_runs, capsys):
    from controller.cli import main

    if "--format" in argv:  # argparse rejects it while parsing
        with pytest.raises(SystemExit) as exited:
            main(argv + ["--out", str(history_runs.out)])
        code = exited.value.code
    else:
        code = main(argv + ["--out", str(history_runs.out)])
    assert code == 2
    assert message in capsys.readouterr().err


def test_report_on_an_empty_reports_folder_says_what_to_do(tmp_path):
    code, _, err = run_cli("report", "--out", str(tmp_path))
    assert code == 2 and "no run folder under" in err and "edgebench run" in err


def test_csv_is_readable_back_with_typed_numbers(history_runs, tmp_path):
    (csv,) = write_report(history_runs.runs[0], ("csv",), dest=tmp_path)
    frame = pd.read_csv(io.StringIO(csv.read_text()))
    assert frame["p50_ms"].dtype == "float64" and frame["threads"].dtype == "int64"


def test_the_memory_plot_shows_the_model_peak_only_when_every_job_has_one():
    from controller.history.plots import memory_column

    frame = pd.DataFrame({"peak_rss_kb": [53_000, 62_000], "model_peak_kb": [4_100, None]})
    assert memory_column(frame) == "peak_rss_kb"  # one job without it: the process peak for all
    frame.loc[1, "model_peak_kb"] = 3_600
    assert memory_column(frame) == "model_peak_kb"
    assert memory_column(frame.drop(columns="model_peak_kb")) == "peak_rss_kb"  # an older run folder


def test_the_flag_legend_explains_only_the_flags_that_occur():
    from controller.history.report import FLAG_MEANINGS, flag_legend

    legend = flag_legend(pd.DataFrame({"flags": ["drift,noisy", "noisy", "odd"]}))
    assert legend == f"noisy: {FLAG_MEANINGS['noisy']}; drift: {FLAG_MEANINGS['drift']}; odd"
    assert "throttled" not in legend and "partial" not in legend
