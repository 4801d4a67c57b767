"""Run folders as tables: the rows the history index holds and the derived columns of a report.

A run folder (:mod:`controller.fleet.store`) stays the source of truth; this module only reads it through
the store's own functions and adds what the history and the reports need:

* :data:`INDEX_COLUMNS` — the fixed, typed columns of the history index (the result columns every
  consumer relies on, plus ``flags``, ``created`` and ``kind``). Columns a newer run folder adds are
  read by the report from the folder itself; the index keeps this stable set, so a SQL table and a
  Parquet file have the same schema.
* :func:`report_frame` — per row: coefficient of variation, size ratio vs fp32, and ``flags`` (noisy,
  throttled, drift, partial ... as stored by the run, plus ``noisy`` from the timing and ``drift``
  from the run's own ``drift`` column (computed at run time with the run's thresholds), or for older run
  folders from :func:`controller.variants.scoring.drift_flag` with the default thresholds).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from controller.defaults import OUT_DIR
from controller.errors import InputError
from controller.fleet.store import present

#: column -> kind ("str", "int", "float", "bool", "time") of every history index row.
INDEX_COLUMNS: dict[str, str] = {
    "run_id": "str", "created": "time", "kind": "str", "device": "str", "model": "str", "variant": "str",
    "threads": "int", "job_id": "str", "runtime": "str", "runtime_version": "str", "status": "str",
    "error": "str", "error_kind": "str", "p50_ms": "float", "p90_ms": "float", "p99_ms": "float",
    "mean_ms": "float", "std_ms": "float", "min_ms": "float", "max_ms": "float", "count": "int",
    "init_ms": "float", "first_inference_ms": "float", "peak_rss_kb": "int", "rss_after_init_kb": "int",
    "model_bytes": "int", "model_sha256": "str", "arch": "str", "cpu_model": "str", "cpu_count": "int",
    "delegates": "str", "noisy": "bool", "speedup_vs_fp32": "float", "top1": "float",
    "cosine_vs_fp32": "float", "max_abs_vs_fp32": "float", "rmse_vs_fp32": "float",
    "device_fingerprint": "str", "flags": "str",
}
#: one row per run in the index
RUN_COLUMNS: dict[str, str] = {
    "run_id": "str", "created": "time", "kind": "str", "path": "str", "exit_code": "int",
    "controller_host": "str", "tool_version": "str", "rows": "int", "fingerprints": "str",
}
#: what makes two result rows the same series (the device fingerprint decides comparability)
SERIES_KEYS = ("device", "model", "variant", "threads", "device_fingerprint")
RUN_KINDS = ("run", "nightly")
KNOWN_FLAGS = ("noisy", "throttled", "drift", "partial")


def is_run_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a run.json and a results.parquet."""
    return os.path.isfile(os.path.join(path, "run.json")) and os.path.isfile(os.path.join(path, "results.parquet"))


def run_folders(out_dir: str | os.PathLike) -> list[Path]:
    """Every run folder directly under ``out_dir``, oldest first (run ids sort by time)."""
    root = Path(out_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and is_run_folder(p)), key=lambda p: p.name)


def resolve_run(ref: str | os.PathLike, out_dir: str | os.PathLike = OUT_DIR) -> Path:
    """A run folder from a path or a run id under ``out_dir``. Raises InputError naming what was
    looked for when neither is a run folder."""
    for candidate in (Path(ref), Path(out_dir) / str(ref)):
        if is_run_folder(candidate):
            return candidate.resolve()
    raise InputError(f"{ref}: not a run folder (no run.json + results.parquet there, nor under {out_dir}/); "
                     "give a run folder or a run id (`edgebench history` lists them)")


def last_run(out_dir: str | os.PathLike = OUT_DIR) -> Path:
    """The most recent run folder under ``out_dir``. Raises InputError when there is none."""
    folders = run_folders(out_dir)
    if not folders:
        raise InputError(f"no run folder under {out_dir}/; run `edgebench run MODELS --out {out_dir}` first "
                         "or pass --out")
    return folders[-1].resolve()


def run_meta(run_dir: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """The run's row of the index (see :data:`RUN_COLUMNS`, without ``rows``/``fingerprints``) from its
    run.json. ``kind`` overrides run.json's ``kind`` (default "run"). Raises InputError when run.json
    is unreadable."""
    path = os.path.join(run_dir, "run.json")
    try:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the run's run.json ({exc})") from exc
    run_id = info.get("run_id") or os.path.basename(os.path.normpath(run_dir))
    kind = str(kind or info.get("kind") or "run")  # "run", "nightly" (RUN_KINDS); others kept as written
    return {"run_id": run_id, "created": _created(info.get("created"), run_id), "kind": kind,
            "path": os.path.abspath(run_dir), "exit_code": info.get("exit_code"),
            "controller_host": info.get("controller_host"), "tool_version": info.get("tool_version")}


def _created(text: str | None, run_id: str) -> datetime.datetime:
    """run.json's ``created`` as an aware UTC datetime; older folders: the time in the run id."""
    if text:
        try:
            value = datetime.datetime.fromisoformat(text)
            return (value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)).astimezone(
                datetime.timezone.utc)
        except ValueError:
            pass
    try:
        return datetime.datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError as exc:
        raise InputError(f"run {run_id}: run.json has no valid 'created' time and the id holds none") from exc


def flag_list(value: Any) -> list[str]:
    """A stored ``flags`` value (list, numpy array, comma-separated str, or missing) as a list of str."""
    if not present(value):
        return []
    if isinstance(value, str):
        return [f.strip() for f in value.split(",") if f.strip()]
    if isinstance(value, Iterable):
        return [str(f) for f in value if f is not None and str(f)]
    return [str(value)]


def index_frame(run_dir: str | os.PathLike, meta: dict[str, Any]) -> pd.DataFrame:
    """The run's result rows with exactly :data:`INDEX_COLUMNS` (``flags`` comma-joined; columns the run
    lacks are null). Reads results.parquet through :func:`controller.fleet.store.load_results`."""
    from controller.fleet.store import load_results

    results = report_frame(load_results(str(run_dir)))
    results["created"] = meta["created"]
    results["kind"] = meta["kind"]
    results["run_id"] = meta["run_id"]
    for column in INDEX_COLUMNS:
        if column not in results.columns:
            results[column] = None
    return results[list(INDEX_COLUMNS)]


def report_frame(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` (a results.parquet frame) plus the derived report columns, sorted by model, device,
    threads and variant (fp32 first):

    * ``cv`` — std / mean of the latency samples (None when either is missing or mean is 0);
    * ``size_ratio_vs_fp32`` — model bytes / the fp32 variant's bytes of the same model;
    * ``flags`` — comma-joined, sorted: the run's own ``flags`` column when present, plus ``noisy`` when
      the ``noisy`` column says so, plus ``drift`` when the run's ``drift`` column says so (older run
      folders without it: accuracy vs fp32 past the default
      :class:`controller.variants.scoring.Thresholds`).
    """
    import pandas as pd

    from controller.variants.manifest import VARIANTS
    from controller.variants.scoring import Thresholds, drift_flag

    frame = results.copy()
    mean = pd.to_numeric(frame.get("mean_ms"), errors="coerce")
    std = pd.to_numeric(frame.get("std_ms"), errors="coerce")
    frame["cv"] = (std / mean.where(mean > 0)).astype("float64")
    fp32 = frame[frame["variant"] == "fp32"]
    fp32_bytes = dict(zip(fp32["model"], pd.to_numeric(fp32["model_bytes"], errors="coerce")))
    fp32_top1 = {(r["device"], r["model"], r["threads"]): r.get("top1") for r in fp32.to_dict("records")}
    frame["size_ratio_vs_fp32"] = [
        _ratio(b, fp32_bytes.get(m)) for b, m in zip(pd.to_numeric(frame["model_bytes"], errors="coerce"),
                                                      frame["model"])]
    has_flags = "flags" in frame.columns
    has_drift = "drift" in frame.columns  # the fleet's own verdict, with the run's thresholds
    thresholds = Thresholds()
    flags = []
    for row in frame.to_dict("records"):
        found = set(flag_list(row.get("flags"))) if has_flags else set()
        if row.get("noisy") is True:
            found.add("noisy")
        if has_drift:
            if row.get("drift") is True or row.get("drift") == 1:
                found.add("drift")
        elif row.get("variant") != "fp32":  # no drift verdict stored (a run's flags column may exist)
            base = fp32_top1.get((row["device"], row["model"], row["threads"]))
            drop = (base - row["top1"]) * 100 if present(base) and present(row.get("top1")) else None
            cosine = row.get("cosine_vs_fp32") if present(row.get("cosine_vs_fp32")) else None
            if drift_flag({"top1_drop_points": drop, "cosine": cosine}, thresholds):
                found.add("drift")
        flags.append(",".join(sorted(found)))
    frame["flags"] = flags
    order = {name: position for position, name in enumerate(VARIANTS)}
    frame["_variant_order"] = frame["variant"].map(lambda v: order.get(v, 9))
    frame = frame.sort_values(["model", "device", "threads", "_variant_order", "variant"], na_position="last",
                              kind="stable")
    return frame.drop(columns="_variant_order").reset_index(drop=True)


def _ratio(value: Any, base: Any) -> float | None:
    if not present(value) or not present(base) or not base:
        return None
    return float(value) / float(base)
