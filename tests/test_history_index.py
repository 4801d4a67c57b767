"""The embedded history index, ``edgebench history`` and the pandas API, over real run folders."""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from controller.history import load_history
from controller.history.index import open_index
from controller.history.parquet_store import COMPACT_AT
from tests.fixtures_history import clone_run, run_cli, run_writers

pytestmark = pytest.mark.slow  # the fixture measures three real runs
UTC = datetime.timezone.utc
REPO = Path(__file__).resolve().parent.parent


def day(n: int, hour: int = 0) -> datetime.datetime:
    return datetime.datetime(2026, 3, 1, hour, tzinfo=UTC) + datetime.timedelta(days=n)


def test_every_run_is_indexed_when_it_ends(history_runs):
    runs = open_index(history_runs.out).runs()
    assert list(runs["run_id"]) == [r.name for r in history_runs.runs]
    assert list(runs["rows"]) == [5, 5, 5] and set(runs["kind"]) == {"run"}
    assert list(runs["exit_code"]) == [1, 1, 1]  # the corrupt model was skipped


def test_history_json_series_are_the_run_folders_p50s_in_time_order(history_runs):
    code, out, err = run_cli("history", "--out", str(history_runs.out), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["metric"] == "p50_ms"
    assert [s["variant"] for s in doc["series"]] == ["dynamic", "fp16", "fp32", "int8"]  # skipped rows: none
    frames = [pd.read_parquet(r / "results.parquet").set_index("variant") for r in history_runs.runs]
    for series in doc["series"]:
        expected = [f.loc[series["variant"], "p50_ms"] for f in frames]
        assert [p["value"] for p in series["points"]] == pytest.approx(expected)
        assert [p["run_id"] for p in series["points"]] == [r.name for r in history_runs.runs]
        assert series["latest"] == pytest.approx(expected[-1])
        # change = latest / median of the earlier runs - 1 (the median of two is their mean)
        assert series["change"] == pytest.approx(expected[-1] / (sum(expected[:2]) / 2) - 1)


def test_history_table_shows_a_sparkline_and_says_how_many_series_it_left_out(history_runs):
    code, out, err = run_cli("history", "--out", str(history_runs.out), "--limit", "2", "--metric", "peak_rss_kb")
    assert code == 0, err
    assert "history of peak_rss_kb" in out and "2 more series" in out
    assert any(ch in out for ch in "▁▂▃▄▅▆▇█")
    assert out.count("│ local ") == 2


def test_a_bad_metric_names_the_choices(history_runs):
    code, _, err = run_cli("history", "--out", str(history_runs.out), "--metric", "speed")
    assert code == 2 and "--metric speed" in err and "p90_ms" in err


def test_parts_are_compacted_and_a_re_added_run_replaces_its_rows(history_runs, tmp_path):
    out = tmp_path / "reports"
    index = open_index(out)
    folders = [clone_run(history_runs.runs[0], out, day(i), scale=1 + i / 100) for i in range(COMPACT_AT + 4)]
    for folder in folders:
        assert index.add_run(folder) == 5
    parts = list((out / ".history" / "parts").glob("*.parquet"))
    assert (out / ".history" / "results.parquet").is_file() and len(parts) == 4
    index.add_run(folders[0])  # in the compacted file: replaced, not duplicated
    rows = index.results(["run_id", "variant", "p50_ms"])
    assert len(rows) == len(folders) * 5 and rows.groupby("run_id").size().eq(5).all()
    # the index says the same as the folders, and the same as a rebuild from them
    before = index.results().sort_values(["run_id", "job_id"]).reset_index(drop=True)
    assert index.rebuild() == len(folders) * 5
    after = index.results().sort_values(["run_id", "job_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


def test_last_comparable_needs_the_same_fingerprint_and_respects_kind(history_runs, tmp_path):
    out = tmp_path / "reports"
    src = history_runs.runs[0]
    first = clone_run(src, out, day(0), kind="nightly")
    other_board = clone_run(src, out, day(1), fingerprint="0123456789abcdef", kind="nightly")
    adhoc = clone_run(src, out, day(2))
    new = clone_run(src, out, day(3), kind="nightly")
    index = open_index(out)
    assert index.rebuild() == 20
    assert index.last_comparable(new) == str(adhoc.resolve())
    assert index.last_comparable(new, kind="nightly") == str(first.resolve())  # not the other board
    assert index.last_comparable(first) is None
    assert index.last_comparable(other_board) is None
    # a run not indexed yet (the nightly asks before adding it) is read from its folder
    later = clone_run(src, tmp_path / "elsewhere", day(4))
    assert index.last_comparable(later) == str(new.resolve())


def test_a_new_fingerprint_starts_a_new_series(history_runs, tmp_path):
    out = tmp_path / "reports"
    for i in range(3):
        clone_run(history_runs.runs[0], out, day(i))
    clone_run(history_runs.runs[0], out, day(3), fingerprint="feedfacefeedface")
    code, stdout, err = run_cli("history", "--rebuild", "--out", str(out), "--variant", "int8", "--json")
    assert code == 0, err
    series = json.loads(stdout)["series"]
    assert sorted(s["count"] for s in series) == [1, 3]
    assert {s["device_fingerprint"] for s in series} >= {"feedfacefeedface"}


ADD_MANY = """
import datetime, sys
from pathlib import Path
from controller.history.index import open_index
from tests.fixtures_history import clone_run
src, out, hour = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
index = open_index(out)
for i in range(10):
    index.add_run(clone_run(src, out, datetime.datetime(2026, 1, 1, hour, i, tzinfo=datetime.timezone.utc)))
"""


def test_two_processes_adding_to_the_embedded_index_at_once_lose_nothing(history_runs, tmp_path):
    out = tmp_path / "reports"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run_writers([[sys.executable, "-c", ADD_MANY, str(history_runs.runs[0]), str(out), str(h)] for h in (1, 2)],
                env, REPO)
    with open_index(out) as index:
        assert len(index.runs()) == 20
        assert len(index.results(["run_id"])) == 100


def test_load_history_returns_the_history_or_one_run(history_runs):
    frame = load_history(history_runs.out, variant="int8")
    assert list(frame["run_id"]) == [r.name for r in history_runs.runs]
    assert frame["created"].is_monotonic_increasing and str(frame["created"].dt.tz) == "UTC"
    assert frame["p50_ms"].dtype == "float64" and frame["threads"].dtype == "int64"
    one = load_history(history_runs.out, run=history_runs.runs[1].name)
    assert len(one) == 5 and {"cv", "size_ratio_vs_fp32", "flags"} <= set(one.columns)
    assert (one["run_id"] == history_runs.runs[1].name).all()


def test_load_history_builds_a_missing_embedded_index(history_runs, tmp_path):
    out = tmp_path / "copied"
    clone_run(history_runs.runs[0], out, day(0))
    assert not (out / ".history").exists()
    assert len(load_history(out)) == 5 and (out / ".history" / "runs.parquet").is_file()


def test_rebuild_skips_an_unreadable_run_folder_and_indexes_the_others(history_runs, tmp_path, caplog):
    out = tmp_path / "reports"
    good = clone_run(history_runs.runs[0], out, day(0))
    bad = clone_run(history_runs.runs[0], out, day(1))
    (bad / "results.parquet").write_bytes(b"not parquet")
    assert open_index(out).rebuild() == 5
    assert list(open_index(out).runs()["run_id"]) == [good.name]
    assert any(bad.name in r.getMessage() and "not indexed" in r.getMessage() for r in caplog.records)
