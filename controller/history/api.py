"""The pandas API for notebooks: one function returns the history, or one run, as a DataFrame."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from controller.defaults import OUT_DIR

if TYPE_CHECKING:
    import pandas as pd


def load_history(out_dir: str | os.PathLike = OUT_DIR, *, run: str | os.PathLike | None = None,
                 store: str | None = None, device: str | None = None, model: str | None = None,
                 variant: str | None = None, threads: int | None = None, kind: str | None = None,
                 columns: list[str] | None = None) -> pd.DataFrame:
    """The results of every indexed run under the reports folder ``out_dir``, oldest run first, one row
    per job (columns :data:`controller.history.frame.INDEX_COLUMNS`: the run's id, ``created`` time
    (UTC) and ``kind``, device, model, variant, threads, latency p50/p90/p99 ms, memory, size, accuracy
    vs fp32, status, ``flags`` comma-joined, ``device_fingerprint``...).

    ``run`` (a run folder or a run id under ``out_dir``): that one run instead, read from its folder
    with the report's derived columns (``cv``, ``size_ratio_vs_fp32``, ``flags``) and every column the
    run stored. ``store``: a ``postgresql://`` URL (default ``$EDGEBENCH_STORE``, else the embedded index
    under ``<out_dir>/.history/``, built on first use when the folder has runs but no index).
    ``device`` / ``model`` / ``variant`` / ``threads`` / ``kind`` keep only matching rows.

    Raises :class:`controller.errors.InputError` when ``run`` is not a run folder,
    :class:`controller.errors.UsageError` for an unknown column, and
    :class:`controller.history.index.StoreError` when the store cannot be read.

    >>> frame = load_history("reports", model="demo")
    >>> frame.pivot_table(index="created", columns="variant", values="p50_ms")   # doctest: +SKIP
    """
    from controller.history.frame import report_frame, resolve_run
    from controller.history.index import open_index

    if run is not None:
        from controller.fleet.store import load_results

        frame = report_frame(load_results(str(resolve_run(run, out_dir))))
        for name, value in (("device", device), ("model", model), ("variant", variant), ("threads", threads)):
            if value is not None:
                frame = frame[frame[name] == value]
        return frame.reset_index(drop=True)
    with open_index(out_dir, store) as index:
        ensure_built(index)
        return index.results(columns, device=device, model=model, variant=variant, threads=threads, kind=kind)


def ensure_built(index) -> None:
    """Build an embedded index that does not exist yet from the run folders (a reports folder made before
    the index existed, or copied from elsewhere)."""
    from controller.history.parquet_store import ParquetIndex

    if isinstance(index, ParquetIndex) and not (index.root / "runs.parquet").is_file():
        index.rebuild()
