"""The shared history store on a real PostgreSQL server (Debian's package, started by the fixture)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.history.index import StoreError, open_index
from tests.fixtures_history import DEMO, FAST, clone_run, local_devices, run_cli, run_writers

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def edgebench(*argv: str) -> subprocess.Popen:
    """A separate controller process."""
    return subprocess.Popen([sys.executable, "-m", "controller", *argv], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_two_controllers_run_at_once_and_both_see_both_runs(pg_database, tmp_path):
    controllers = []
    for name in ("lab-a", "lab-b"):  # two workstations: own reports folder, own device workdir
        folder = tmp_path / name
        folder.mkdir()
        devices = local_devices(folder)
        controllers.append((folder, edgebench("run", str(DEMO), "--devices", str(devices), "--out",
                                              str(folder / "reports"), "--store", pg_database, "--json", *FAST)))
    run_ids = []
    for folder, proc in controllers:
        code, out, err = finish(proc)
        doc = json.loads(out)
        assert code == 0, err
        assert doc["history_index"] == {"rows": 4, "error": None}
        assert not (folder / "reports" / ".history").exists()  # the shared store, not the local files
        run_ids.append(doc["run_id"])
    for folder, _ in controllers:  # each controller asks the shared store
        code, out, err = finish(edgebench("history", "--runs", "--json", "--store", pg_database, "--out",
                                          str(folder / "reports")))
        assert code == 0, err
        assert sorted(r["run_id"] for r in json.loads(out)) == sorted(run_ids)
        code, out, err = finish(edgebench("history", "--json", "--variant", "int8", "--store", pg_database,
                                          "--out", str(folder / "reports")))
        (series,) = json.loads(out)["series"]  # same machine, same fingerprint: one series of 2 points
        assert series["count"] == 2 and sorted(p["run_id"] for p in series["points"]) == sorted(run_ids)
    # a run's report draws its trend from the shared store, over the runs made up to that run's time:
    # the later of the two runs has the other controller's run in it, the earlier one does not
    made = sorted((json.loads((folder / "reports" / run_id / "run.json").read_text())["created"], folder)
                  for (folder, _), run_id in zip(controllers, run_ids))
    (first, first_folder), (last, last_folder) = made
    for folder, runs_in_trend in ((last_folder, 2), (first_folder, 1 if first < last else 2)):
        code, out, err = run_cli("report", "--out", str(folder / "reports"), "--store", pg_database,
                                 "--format", "html", "--json")
        assert code == 0, err
        html = Path(json.loads(out)["files"][0]).read_text()
        both = runs_in_trend == 2
        assert ("the last 2 runs" in html) == both and ('alt="demo trend"' in html) == both, (first, last)
        assert ("only this run so far" in html) == (not both)


ADD_MANY = """
import datetime, sys
from pathlib import Path
from controller.history.index import open_index
from tests.fixtures_history import clone_run
src, out, url, hour = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
with open_index(out, url) as index:
    for i in range(8):
        when = datetime.datetime(2026, 1, 1, hour, i, tzinfo=datetime.timezone.utc)
        index.add_run(clone_run(src, out, when, scale=1 + i / 10))
"""


def test_two_processes_adding_runs_at_the_same_time_lose_nothing(pg_database, history_runs, tmp_path):
    run_writers([[sys.executable, "-c", ADD_MANY, str(history_runs.runs[0]), str(tmp_path / f"c{h}"), pg_database,
                  str(h)] for h in (1, 2)], ENV, REPO)
    with open_index(tmp_path / "c1", pg_database) as index:
        runs = index.runs()
        rows = index.results(["run_id", "variant", "p50_ms"])
    assert len(runs) == 16 and runs["created"].is_monotonic_increasing
    assert len(rows) == 16 * 5 and rows.groupby("run_id").size().eq(5).all()


def test_re_adding_a_run_replaces_it_and_rebuild_keeps_other_controllers_runs(pg_database, history_runs, tmp_path):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    base = history_runs.runs[0]
    a = clone_run(base, mine, datetime.datetime(2026, 2, 1, tzinfo=datetime.timezone.utc))
    b = clone_run(base, mine, datetime.datetime(2026, 2, 2, tzinfo=datetime.timezone.utc))
    c = clone_run(base, theirs, datetime.datetime(2026, 2, 3, tzinfo=datetime.timezone.utc))
    with open_index(mine, pg_database) as index:
        for folder in (a, b, a):
            index.add_run(folder)
        open_index(theirs, pg_database).add_run(c)
        assert sorted(index.runs()["run_id"]) == sorted([a.name, b.name, c.name])
        assert len(index.results(["run_id"], run_id=a.name)) == 5  # not 10
        assert index.last_comparable(c) == str(b.resolve())
        import shutil

        shutil.rmtree(b)
        assert index.rebuild() == 5
        assert sorted(index.runs()["run_id"]) == sorted([a.name, c.name])


def test_an_unreachable_store_is_refused_with_its_address_and_the_fix(postgres, tmp_path):
    url = f"postgresql://postgres@/nosuchdb?host={postgres.socket_dir}&port={postgres.port}"
    with pytest.raises(StoreError, match="nosuchdb.*check the --store URL"):
        open_index(tmp_path, url)
    code, _, err = run_cli("history", "--store", url, "--out", str(tmp_path))
    assert code == 2 and "does not exist" in err


def test_an_unsupported_store_is_a_usage_error_before_anything_runs(tmp_path):
    started = time.monotonic()
    code, _, err = run_cli("run", str(DEMO), "--out", str(tmp_path), "--store", "mysql://x@y/z")
    assert code == 2 and "--store mysql://...: unsupported" in err
    assert not any(tmp_path.iterdir()) and time.monotonic() - started < 10  # no run folder was made
