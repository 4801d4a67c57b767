"""The embedded history index: Parquet files under ``<out>/.history/``.

::

    <out>/.history/
      lock               fcntl lock: writers exclusive, readers shared (several processes may use it)
      runs.parquet       one row per run (RUN_COLUMNS), rewritten on every add
      results.parquet    the result rows of most runs (INDEX_COLUMNS), compacted
      parts/<run>.parquet  rows of runs added since the last compaction (at most COMPACT_AT files)

Adding a run writes one small part file (the big file is not rewritten at the end of every run); when
COMPACT_AT parts have gathered, or a run already in the big file is re-added, the parts are merged into
results.parquet. Every file is replaced atomically (temp file + rename) under the exclusive lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

from controller.errors import InputError
from controller.history.frame import INDEX_COLUMNS, RUN_COLUMNS, index_frame, run_folders, run_meta
from controller.history.index import HistoryIndex, StoreError, arrow_schema, to_arrow

log = logging.getLogger(__name__)
COMPACT_AT = 16
FOLDER = ".history"


class ParquetIndex(HistoryIndex):
    """The embedded index of the reports folder ``out_dir``."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.root = self.out_dir / FOLDER
        self.description = f"embedded index {self.root}"

    # locking and files
    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        try:
            (self.root / "parts").mkdir(parents=True, exist_ok=True)
            fh = open(self.root / "lock", "a+b")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise StoreError(f"cannot use the history index {self.root}: {exc}; check --out") from exc
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write(self, table: pa.Table, path: Path) -> None:
        import pyarrow.parquet as pq

        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write {path}: {exc}") from exc

    def _parts(self) -> list[Path]:
        folder = self.root / "parts"
        return sorted(folder.glob("*.parquet")) if folder.is_dir() else []

    def _read_runs(self) -> pa.Table:
        import pyarrow.parquet as pq

        path = self.root / "runs.parquet"
        return pq.read_table(path) if path.is_file() else arrow_schema(RUN_COLUMNS).empty_table()

    # HistoryIndex
    def _put_run(self, meta: dict[str, Any], rows: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        table = to_arrow(rows, INDEX_COLUMNS)
        part = self.root / "parts" / f"{meta['run_id']}.parquet"
        with self._locked(exclusive=True):
            runs = self._read_runs()
            # indexed before and no part file: its rows are in the compacted file and must be replaced there
            in_main = meta["run_id"] in set(runs["run_id"].to_pylist()) and not part.exists()
            self._write(table, part)
            runs = runs.filter(pc.field("run_id") != meta["run_id"])
            runs = pa.concat_tables([runs, to_arrow(_frame([meta]), RUN_COLUMNS)])
            self._write(runs, self.root / "runs.parquet")
            if in_main or len(self._parts()) >= COMPACT_AT:
                self._compact()

    def _compact(self) -> None:
        """Merge the part files into results.parquet (caller holds the exclusive lock)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        parts = self._parts()
        main = self.root / "results.parquet"
        tables = [pq.read_table(p) for p in parts]
        if main.is_file():
            replaced = pa.array([p.stem for p in parts], pa.string())
            tables.insert(0, pq.read_table(main).filter(~pc.field("run_id").isin(replaced)))
        if tables:
            self._write(pa.concat_tables(tables).combine_chunks(), main)
        for part in parts:
            part.unlink()

    def rebuild(self) -> int:
        import pyarrow as pa

        metas, tables = [], []
        for folder in run_folders(self.out_dir):
            try:
                meta = run_meta(folder)
                rows = index_frame(folder, meta)
            except (InputError, OSError, ValueError) as exc:  # one unreadable folder must not hide the rest
                log.warning("%s not indexed: %s", folder, exc)
                continue
            meta["rows"] = len(rows)
            meta["fingerprints"] = ",".join(sorted({str(f) for f in rows["device_fingerprint"].dropna()}))
            metas.append(meta)
            tables.append(to_arrow(rows, INDEX_COLUMNS))
        with self._locked(exclusive=True):
            for part in self._parts():
                part.unlink()
            results = pa.concat_tables(tables) if tables else arrow_schema(INDEX_COLUMNS).empty_table()
            self._write(results, self.root / "results.parquet")
            self._write(to_arrow(_frame(metas, RUN_COLUMNS), RUN_COLUMNS), self.root / "runs.parquet")
        return results.num_rows

    def _runs(self) -> pd.DataFrame:
        with self._locked(exclusive=False):
            return self._read_runs().to_pandas()

    def _results(self, columns: list[str], filters: dict[str, Any]) -> pa.Table:
        import pyarrow as pa
        import pyarrow.parquet as pq

        expression = _expression(filters)
        with self._locked(exclusive=False):
            files = [self.root / "results.parquet"] if (self.root / "results.parquet").is_file() else []
            files += self._parts()
            tables = [pq.read_table(f, columns=columns, filters=expression) for f in files]
        if not tables:
            return arrow_schema(INDEX_COLUMNS, columns).empty_table()
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _expression(filters: dict[str, Any]):
    """A pyarrow filter expression: each key equal to its value (or in its list of values)."""
    import pyarrow.compute as pc

    expression = None
    for name, value in filters.items():
        if isinstance(value, (list, tuple, set)):
            term = pc.field(name).isin(list(value))
        else:
            term = pc.field(name) == value
        expression = term if expression is None else expression & term
    return expression


def _frame(records: list[dict[str, Any]], columns: dict[str, str] | None = None) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(records, columns=list(columns) if columns else None)
