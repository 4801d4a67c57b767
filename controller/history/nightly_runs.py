"""The earlier nightlies a nightly compares with: which runs, and per job which run is its baseline.

The baseline of a job is its row in the most recent earlier nightly where that row was *accepted*
(``baseline_ok`` in that night's regressions.json): a night's number is not accepted when it was a
suspected change that the confirming re-measure did not reproduce, nor when it was an improvement that
was not confirmed - so the baseline never moves forward on an improvement alone, and a fluke never
becomes the yardstick. A confirmed regression is accepted: it is reported once, then it is the new level
(an alert that repeats every night until someone acts gets switched off).

The history index lists the nightlies; when the store cannot be opened the run folders under the reports
folder (the source of truth) are read directly with :func:`controller.history.frame.run_folders` and
:func:`~controller.history.frame.run_meta`: same answer, slower.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller.history.compare import COMPARABLE, KEY

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REGRESSIONS_JSON = "regressions.json"
LOOKBACK = 30  #: earlier nightlies searched for a job's baseline


@dataclass(frozen=True)
class NightlyRun:
    run_id: str
    created: datetime.datetime
    path: str


@dataclass
class Baseline:
    """Baseline rows (results columns; may come from several runs) and their raw samples."""

    results: Any
    samples: Any
    runs: list[str] = field(default_factory=list)  #: run ids the rows come from, newest first
    last_comparable: str | None = None  #: the most recent earlier nightly sharing a comparable job


def open_history_index(out_dir: str, store_url: str | None = None) -> Any | None:
    """The history index of ``out_dir`` (``store_url``: None = embedded or $EDGEBENCH_STORE), or None when
    the store cannot be opened (logged as a warning: the nightly then reads the run folders, which are the
    source of truth). Close it with ``.close()``."""
    from controller.errors import EdgebenchError
    from controller.history.index import open_index

    try:
        return open_index(out_dir, store_url)
    except EdgebenchError as exc:
        log.warning("history index not usable (%s); reading run folders directly", exc)
        return None


def nightly_runs(out_dir: str, index: Any | None = None) -> list[NightlyRun]:
    """Every nightly under ``out_dir``, oldest first."""
    if index is not None:
        frame = index.runs(kind="nightly")
        return [NightlyRun(str(r["run_id"]), utc(r["created"]), str(r["path"])) for r in frame.to_dict("records")]
    from controller.history.frame import run_folders, run_meta

    metas = (run_meta(path) for path in run_folders(out_dir))
    runs = [NightlyRun(str(m["run_id"]), utc(m["created"]), m["path"]) for m in metas if m["kind"] == "nightly"]
    return sorted(runs, key=lambda r: r.created)


def accepted_keys(run_dir: str) -> dict[tuple, bool]:
    """(device, model, variant, threads) -> baseline_ok, from the run's regressions.json ({} if none).
    Raises InputError naming the file when it is not a regressions document."""
    from controller.errors import InputError

    path = os.path.join(run_dir, REGRESSIONS_JSON)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        return {(k["device"], k["model"], k["variant"], k["threads"]): bool(k["baseline_ok"])
                for k in doc.get("keys", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not a readable regressions document ({type(exc).__name__}: {exc}); move it "
                         "away and that night is used as a baseline like any other") from exc


def find_baseline(new: pd.DataFrame, earlier: list[NightlyRun]) -> Baseline:
    """The baseline of each job of ``new`` (a run's results) among ``earlier`` nightlies (oldest first;
    only those created before this run are given), searching back at most :data:`LOOKBACK` nights.

    Also included, so that compare can say why they are unpaired: the previous nightly's ok jobs that
    ``new`` does not have (missing), and for a job with no comparable baseline its most recent
    non-comparable row (the reason: model changed, runtime upgraded ...)."""
    import pandas as pd

    from controller.fleet.store import load_results, load_samples

    wanted = {_key(r): r for r in new.to_dict("records")}
    new_keys = set(wanted)
    rows: list[dict] = []
    other: dict[tuple, dict] = {}  # missing from new, or the most recent non-comparable row of a key
    sample_parts = []
    used: list[str] = []
    last_comparable = None
    for position, run in enumerate(list(reversed(earlier))[:LOOKBACK]):
        if not wanted and position:
            break
        ok = accepted_keys(run.path)
        chosen = []
        for row in load_results(run.path).to_dict("records"):
            key = _key(row)
            if row["status"] != "ok":
                continue
            if key not in new_keys:
                if position == 0:
                    other.setdefault(key, row)
            elif key not in wanted:
                continue
            elif not _comparable(row, wanted[key]):
                other.setdefault(key, row)
            elif ok.get(key, True):
                chosen.append(row)
                del wanted[key]
        if not chosen:
            continue
        last_comparable = last_comparable or run.path
        used.append(run.run_id)
        rows += chosen
        samples = load_samples(run.path)
        if not samples.empty:
            ids = pd.MultiIndex.from_tuples([(r["device"], r["job_id"]) for r in chosen])
            sample_parts.append(samples[pd.MultiIndex.from_arrays([samples["device"], samples["job_id"]]).isin(ids)])
    rows += [row for key, row in other.items() if key in wanted or key not in new_keys]
    results = pd.DataFrame(rows, columns=list(new.columns)) if rows else new.iloc[0:0]
    samples = pd.concat(sample_parts, ignore_index=True) if sample_parts else None
    return Baseline(results, samples, used, last_comparable)


def _key(row: dict) -> tuple:
    return tuple(int(row[k]) if k == "threads" else row[k] for k in KEY)


def _comparable(a: dict, b: dict) -> bool:
    return all(a.get(c) == b.get(c) for c, _ in COMPARABLE if a.get(c) is not None and b.get(c) is not None)


def utc(value: Any) -> datetime.datetime:
    """A timezone-aware UTC datetime from an ISO string, a datetime or a pandas Timestamp."""
    if isinstance(value, datetime.datetime):
        stamp = value
    elif hasattr(value, "to_pydatetime"):
        stamp = value.to_pydatetime()
    else:
        stamp = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.timezone.utc)


def nightly_history(runs: list[NightlyRun], index: Any | None = None) -> pd.DataFrame:
    """Result rows of ``runs`` with their ``created`` time (for the change-point series)."""
    import pandas as pd

    from controller.fleet.store import load_results

    if not runs:
        return pd.DataFrame()
    if index is not None:
        return index.results(run_id=[r.run_id for r in runs])
    parts = []
    for run in runs:
        frame = load_results(run.path)
        frame["created"] = run.created
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)
