"""The history index: every run's result rows in one place, so questions over time are fast.

Run folders stay the source of truth; the index is a copy that :meth:`HistoryIndex.rebuild` remakes from
them at any time (``edgebench history --rebuild``). Two stores implement it:

* embedded (default): Parquet files under ``<out>/.history/`` (:mod:`controller.history.parquet_store`);
* ``postgresql://...``: tables in a PostgreSQL database shared by several controllers
  (:mod:`controller.history.sql_store`; SQLAlchemy 2 + psycopg 3).

Which one: :func:`open_index` — the ``store_url`` argument (``--store``), else the environment variable
``EDGEBENCH_STORE``, else embedded.

Comparability: the ``device_fingerprint`` of each row (a hash of the device's hardware, kernel, python
and runtime + version, made by the fleet) decides which rows form one series and which earlier run a
new one can be compared with (:meth:`HistoryIndex.last_comparable`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from typing_extensions import Self

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

from controller.defaults import OUT_DIR
from controller.errors import EdgebenchError, ExitCode, ToolError, UsageError
from controller.history.frame import INDEX_COLUMNS, RUN_COLUMNS, index_frame, resolve_run, run_meta

STORE_ENV = "EDGEBENCH_STORE"


class StoreError(EdgebenchError):
    """The history store cannot be opened or written (database unreachable, folder not writable). The
    message names the store (without password) and what to do."""

    exit_code = ExitCode.USAGE


class HistoryIndex:
    """What every store offers. Subclasses implement the ``_``-prefixed storage methods."""

    description = "history index"

    def add_run(self, run_dir: str | os.PathLike, kind: str | None = None) -> int:
        """(Re)index one run folder: its rows replace any rows of the same run id. ``kind`` "run" or
        "nightly" (None: run.json's ``kind``, default "run"). Returns the number of result rows indexed.
        Raises InputError when ``run_dir`` is not a run folder, StoreError when the store fails."""
        run_dir = resolve_run(run_dir, os.path.dirname(os.path.abspath(run_dir)))
        meta = run_meta(run_dir, kind)
        rows = index_frame(run_dir, meta)
        meta["rows"] = len(rows)
        meta["fingerprints"] = ",".join(sorted({str(f) for f in rows["device_fingerprint"].dropna()}))
        self._put_run(meta, rows)
        return len(rows)

    def rebuild(self) -> int:
        """Forget everything and index every run folder under the reports folder; return the row count."""
        raise NotImplementedError

    def runs(self, kind: str | None = None) -> pd.DataFrame:
        """One row per indexed run (:data:`~controller.history.frame.RUN_COLUMNS`), oldest first."""
        frame = self._runs()
        if kind:
            frame = frame[frame["kind"] == kind]
        return frame.sort_values(["created", "run_id"], kind="stable").reset_index(drop=True)

    def results_table(self, columns: list[str] | None = None, **filters: Any) -> pa.Table:
        """Indexed result rows as an Arrow table. ``filters``: device, model, variant, threads, kind,
        run_id (a value, or a list of values = any of them); ``columns`` a subset of INDEX_COLUMNS.
        Raises UsageError for an unknown column or filter."""
        columns = list(columns or INDEX_COLUMNS)
        unknown = [c for c in list(columns) + list(filters) if c not in INDEX_COLUMNS]
        if unknown:
            raise UsageError(f"unknown history column(s) {', '.join(unknown)}; known: {', '.join(INDEX_COLUMNS)}")
        filters = {k: v for k, v in filters.items() if v is not None}
        return self._results(columns, filters)

    def results(self, columns: list[str] | None = None, **filters: Any) -> pd.DataFrame:
        """:meth:`results_table` as a pandas DataFrame, oldest run first."""
        frame = self.results_table(columns, **filters).to_pandas()
        if "created" in frame.columns:
            frame = frame.sort_values("created", kind="stable").reset_index(drop=True)
        return frame

    def last_comparable(self, run: str | os.PathLike, kind: str | None = None) -> str | None:
        """Path of the most recent run created before ``run`` (a run folder or an indexed run id) that
        shares at least one (device fingerprint, model sha256, variant, threads) with an ok row of it,
        itself ok there; ``kind="nightly"`` looks only at nightlies. None when there is none."""
        keys = ["device_fingerprint", "model_sha256", "variant", "threads"]
        runs = self._runs()
        known = runs[runs["run_id"] == str(run)]
        if len(known):
            mine = self.results(keys + ["status"], run_id=str(run))
            created = known["created"].iloc[0]
            run_id = str(run)
        else:
            folder = resolve_run(run, os.path.dirname(os.path.abspath(run)))
            meta = run_meta(folder)
            mine = index_frame(folder, meta)
            created, run_id = meta["created"], meta["run_id"]
        wanted = mine[mine["status"] == "ok"][keys].drop_duplicates()
        if not len(wanted):
            return None
        before = runs[(runs["created"] < created) & (runs["run_id"] != run_id)]
        if kind:
            before = before[before["kind"] == kind]
        if not len(before):
            return None
        rows = self.results(keys + ["status", "run_id", "created"], run_id=list(before["run_id"]))
        rows = rows[rows["status"] == "ok"]
        rows = rows.merge(wanted.astype({k: rows[k].dtype for k in keys}), on=keys)
        if not len(rows):
            return None
        best = rows.sort_values(["created", "run_id"]).iloc[-1]["run_id"]
        return str(runs[runs["run_id"] == best]["path"].iloc[0])

    def close(self) -> None:
        """Release what the store holds (connections)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # storage, per backend
    def _put_run(self, meta: dict[str, Any], rows: pd.DataFrame) -> None:
        raise NotImplementedError

    def _runs(self) -> pd.DataFrame:
        raise NotImplementedError

    def _results(self, columns: list[str], filters: dict[str, Any]) -> pa.Table:
        raise NotImplementedError


def store_url_of(store_url: str | None) -> str:
    """The store to use: ``store_url`` (``--store``), else ``$EDGEBENCH_STORE``, else "" (embedded)."""
    if store_url is not None:
        return store_url
    return os.environ.get(STORE_ENV, "")


SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://")


def check_store_url(store_url: str | None) -> str:
    """The store URL to use (see :func:`store_url_of`); UsageError when its scheme is not supported."""
    url = store_url_of(store_url)
    if url and not url.startswith(SCHEMES):
        raise UsageError(f"--store {url.split('://')[0]}://...: unsupported; give postgresql://user@host/db "
                         "(or nothing for the embedded index under <out>/.history/)")
    return url


def open_index(out_dir: str | os.PathLike = OUT_DIR, store_url: str | None = None) -> HistoryIndex:
    """The history index of the reports folder ``out_dir``: embedded Parquet files under
    ``<out_dir>/.history/``, or the PostgreSQL database ``store_url`` / ``$EDGEBENCH_STORE``
    (``postgresql://user[:password]@host[:port]/db`` or with ``?host=/socket/dir``). Raises UsageError
    for another scheme, ToolError when the ``postgres`` extra is not installed and StoreError when the
    database cannot be reached."""
    url = check_store_url(store_url)
    if not url:
        from controller.history.parquet_store import ParquetIndex

        return ParquetIndex(out_dir)
    try:
        import psycopg  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as exc:
        raise ToolError(f"--store postgresql://... needs SQLAlchemy and psycopg ({exc}); install the extra: "
                        "pip install 'edgebench[postgres]'") from exc
    from controller.history.sql_store import SqlIndex

    return SqlIndex(url, out_dir)


def index_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, store_url: str | None = None,
              kind: str | None = None) -> dict[str, Any]:
    """Add a finished run folder to the history index of ``out_dir`` (see :func:`open_index`;
    ``kind``: see :meth:`HistoryIndex.add_run`). Returns ``{"rows": n, "error": None}``, or ``{"rows":
    0, "error": reason}`` when it could not be indexed: the run folder is complete either way, and the
    reason says that ``edgebench history --rebuild`` adds it later. Never raises an EdgebenchError."""
    try:
        with open_index(out_dir, store_url) as index:
            return {"rows": index.add_run(run_dir, kind), "error": None}
    except EdgebenchError as exc:
        return {"rows": 0, "error": f"run not added to the history index ({exc}); the run folder is complete: "
                f"`edgebench history --rebuild --out {out_dir}` adds it later"}


def arrow_schema(columns: dict[str, str], names: list[str] | None = None) -> pa.Schema:
    """The Arrow schema of ``columns`` (name -> kind of :data:`INDEX_COLUMNS` / :data:`RUN_COLUMNS`)."""
    import pyarrow as pa

    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
             "time": pa.timestamp("us", tz="UTC")}
    return pa.schema([(name, types[columns[name]]) for name in (names or columns)])


def to_arrow(frame: pd.DataFrame, columns: dict[str, str]) -> pa.Table:
    """``frame`` as an Arrow table with exactly the typed ``columns`` (missing ones null; numbers that
    were stored as objects or floats with NaN converted; nothing else is guessed)."""
    import pandas as pd
    import pyarrow as pa

    schema = arrow_schema(columns)
    arrays = []
    for field in schema:
        values = frame[field.name] if field.name in frame.columns else pd.Series([None] * len(frame))
        kind = columns[field.name]
        if kind in ("int", "float"):
            values = pd.to_numeric(values, errors="coerce")
            if kind == "int":
                values = values.round().astype("Int64")
        elif kind == "time":
            values = pd.to_datetime(values, utc=True)
        elif kind == "bool":
            values = values.astype("boolean")
        else:
            values = values.astype("object").where(values.notna(), None).map(
                lambda v: v if v is None else str(v))
        arrays.append(pa.array(values, type=field.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


__all__ = ["INDEX_COLUMNS", "RUN_COLUMNS", "HistoryIndex", "StoreError", "index_run", "open_index", "store_url_of"]
