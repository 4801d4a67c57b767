"""Accuracy of a device's jobs from the outputs they saved: each job scored with
:func:`controller.variants.scoring.score` against the same device's fp32 job of the same model (same
threads when there is one), and top-1 against the eval set's labels. The numbers mean what
``convert --eval`` reports in ``accuracy.json`` (worst output, per output); a drifted variant is flagged
in ``results.parquet`` (``drift``, ``drift_reasons``) and the run table."""

from __future__ import annotations

from typing import Any

import numpy as np

from controller.variants.scoring import Thresholds, load_outputs, score


def score_jobs(jobs: list[dict[str, Any]], outputs: dict[str, str], labels_of: dict[str, str | None],
               thresholds: Thresholds) -> dict[str, dict[str, Any]]:
    """Accuracy columns per job id (see ``controller.fleet.store.ACCURACY_COLUMNS``).

    ``jobs``: the device's job dicts (``id``, ``threads``, ``meta.model_name``, ``meta.variant``);
    ``outputs``: job id -> local outputs .npz; ``labels_of``: model name -> eval .npz (with ``y``) or None.
    """
    by_id = {job["id"]: job for job in jobs}
    loaded = {job_id: load_outputs(path) for job_id, path in outputs.items()}
    labels_cache: dict[str, Any] = {}

    def labels(model: str) -> np.ndarray | None:
        path = labels_of.get(model)
        if path and path not in labels_cache:
            with np.load(path, allow_pickle=False) as data:
                labels_cache[path] = np.asarray(data["y"]) if "y" in data.files else None
        return labels_cache.get(path) if path else None

    def reference(job: dict[str, Any]) -> str | None:
        fp32 = [i for i, j in by_id.items() if i in loaded and j["meta"]["variant"] == "fp32"
                and j["meta"]["model_name"] == job["meta"]["model_name"]]
        same_threads = [i for i in fp32 if by_id[i]["threads"] == job["threads"]]
        return (same_threads or fp32 or [None])[0]

    columns: dict[str, dict[str, Any]] = {}
    for job_id, values in loaded.items():
        job = by_id[job_id]
        model_labels = labels(job["meta"]["model_name"])
        ref_id = reference(job)
        ref = loaded.get(ref_id) if ref_id else None
        ref_top1 = score(ref, labels=model_labels).top1 if ref is not None else None
        result = score(values, ref, model_labels, ref_top1, thresholds,
                       is_reference=job["meta"]["variant"] == "fp32")
        columns[job_id] = {
            "top1": result.top1, "cosine_vs_fp32": result.cosine, "max_abs_vs_fp32": result.max_abs,
            "rmse_vs_fp32": result.rmse, "top1_drop_points": result.top1_drop_points,
            "worst_output": result.worst_output, "drift": result.flagged,
            "drift_reasons": "; ".join(result.reasons) or None,
        }
    return columns
