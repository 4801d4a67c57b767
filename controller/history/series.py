"""A metric over time: the history index's rows grouped into series, one per comparable job.

A series is one (device, model, variant, threads, device fingerprint): the same job on the same
hardware + software, so its points can be compared. A device whose runtime or kernel changed starts a
new series (a new fingerprint). Built with Arrow and numpy only (no pandas), so ``edgebench history``
over a million rows stays close to reading the Parquet file itself.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

from controller.errors import UsageError
from controller.history.frame import INDEX_COLUMNS, SERIES_KEYS

#: metrics `edgebench history --metric` accepts (numeric index columns)
METRICS = tuple(name for name, kind in INDEX_COLUMNS.items() if kind in ("float", "int") and name != "threads")
BARS = "▁▂▃▄▅▆▇█"


@dataclass
class Series:
    """One series of a metric: its key, and the points oldest first."""

    key: dict[str, Any]
    values: np.ndarray  #: float64, one per ok run
    created: np.ndarray  #: datetime64[us] (UTC), same length
    run_id_array: Any = None  #: the run ids (a pyarrow string array, turned into str only when asked)

    @property
    def run_ids(self) -> list[str]:
        return [] if self.run_id_array is None else self.run_id_array.to_pylist()

    @property
    def latest(self) -> float:
        return float(self.values[-1])

    def change(self) -> float | None:
        """Latest value / median of the earlier ones - 1 (None with a single point)."""
        import numpy as np

        if len(self.values) < 2:
            return None
        base = float(np.median(self.values[:-1]))
        return self.latest / base - 1 if base else None

    def to_dict(self, points: bool = True) -> dict[str, Any]:
        doc = dict(self.key)
        doc.update(count=len(self.values), first=_iso(self.created[0]), last=_iso(self.created[-1]),
                   min=float(self.values.min()), max=float(self.values.max()), latest=self.latest,
                   change=self.change())
        if points:
            doc["points"] = [{"run_id": r, "created": _iso(c), "value": float(v)}
                             for r, c, v in zip(self.run_ids, self.created, self.values)]
        return doc


def check_metric(metric: str) -> str:
    """``metric`` when it is a numeric history column; else UsageError listing the choices."""
    if metric not in METRICS:
        raise UsageError(f"--metric {metric}: not a numeric history column; choose one of {', '.join(METRICS)}")
    return metric


def build_series(table: pa.Table, metric: str) -> list[Series]:
    """Group ``table`` (columns SERIES_KEYS + run_id, created, status, ``metric``) into series of ok rows
    with a value, each oldest first; series sorted by their key."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    table = table.filter(pc.and_(pc.equal(table["status"], "ok"), pc.is_valid(table[metric])))
    if table.num_rows == 0:
        return []
    created_col = table["created"]
    if table.num_rows > 1 and not pc.all(pc.greater_equal(created_col.slice(1), created_col.slice(0, table.num_rows - 1))).as_py():
        table = table.sort_by([("created", "ascending"), ("run_id", "ascending")])  # the index is usually in order
    grouped = table.group_by(list(SERIES_KEYS), use_threads=False).aggregate(
        [(metric, "list"), ("created", "list"), ("run_id", "list")])
    grouped = grouped.sort_by([(k, "ascending") for k in SERIES_KEYS])
    values = grouped[f"{metric}_list"].combine_chunks()
    created = grouped["created_list"].combine_chunks()
    run_ids = grouped["run_id_list"].combine_chunks()
    flat_values = values.flatten().cast(pa.float64()).to_numpy(zero_copy_only=False)
    flat_created = created.flatten().cast(pa.timestamp("us")).to_numpy(zero_copy_only=False)
    flat_run_ids = run_ids.flatten()
    offsets = values.offsets.to_numpy()
    keys = {k: grouped[k].to_pylist() for k in SERIES_KEYS}
    out = []
    for i in range(grouped.num_rows):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        out.append(Series({k: keys[k][i] for k in SERIES_KEYS}, np.asarray(flat_values[lo:hi]),
                          flat_created[lo:hi], flat_run_ids.slice(lo, hi - lo)))
    return out


def sparkline(values: np.ndarray, width: int = 24) -> str:
    """The last ``width`` points (fewer: all) as unicode bars scaled between their min and max."""
    import numpy as np

    tail = np.asarray(values[-width:], dtype=float)
    if not len(tail):
        return ""
    lo, hi = float(tail.min()), float(tail.max())
    if hi - lo <= 1e-12 * max(abs(hi), 1.0):
        return BARS[3] * len(tail)
    steps = np.clip(((tail - lo) / (hi - lo) * (len(BARS) - 1)).round().astype(int), 0, len(BARS) - 1)
    return "".join(BARS[s] for s in steps)


def _iso(value: Any) -> str:
    """A numpy datetime64 (UTC, naive) as ISO 8601 with Z."""
    import numpy as np

    seconds = np.datetime64(value, "s").astype("int64")
    return datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
