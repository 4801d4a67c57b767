"""The history index in PostgreSQL, shared by several controllers of a lab (SQLAlchemy 2 + psycopg 3).

Two tables, made on first use (under an advisory lock, so two controllers starting together do not
race): ``edgebench_runs`` (RUN_COLUMNS, key run_id) and ``edgebench_results`` (INDEX_COLUMNS, indexed
by run_id and by model/device). Adding a run is one transaction: its old rows are deleted and the new
ones inserted under a per-run advisory lock, so a reader sees a run whole or not at all, and two
controllers adding runs at the same time both land.

``rebuild`` re-adds every run folder of this controller's reports folder and drops the rows of runs
whose folder under it is gone; runs other controllers added are left alone (their folders are theirs).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

from controller.errors import InputError
from controller.history.frame import INDEX_COLUMNS, RUN_COLUMNS, run_folders
from controller.history.index import HistoryIndex, StoreError, arrow_schema, to_arrow

log = logging.getLogger(__name__)
RUNS_TABLE = "edgebench_runs"
RESULTS_TABLE = "edgebench_results"
SCHEMA_LOCK = 0x6564676562  # advisory lock id held while creating the tables ("edgeb")


def _tables():
    import sqlalchemy as sa

    types = {"str": sa.Text, "int": sa.BigInteger, "float": sa.Double, "bool": sa.Boolean,
             "time": lambda: sa.DateTime(timezone=True)}
    meta = sa.MetaData()
    runs = sa.Table(RUNS_TABLE, meta, *[sa.Column(n, types[k](), primary_key=n == "run_id")
                                        for n, k in RUN_COLUMNS.items()])
    results = sa.Table(RESULTS_TABLE, meta, *[sa.Column(n, types[k]()) for n, k in INDEX_COLUMNS.items()])
    sa.Index(f"{RESULTS_TABLE}_run", results.c.run_id)
    sa.Index(f"{RESULTS_TABLE}_series", results.c.model, results.c.device, results.c.variant)
    return meta, runs, results


class SqlIndex(HistoryIndex):
    """The index in the database at ``url``; ``out_dir`` is this controller's reports folder."""

    def __init__(self, url: str, out_dir: str | os.PathLike):
        import sqlalchemy as sa

        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        self.out_dir = os.path.abspath(out_dir)
        try:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreError(f"--store: cannot use {url.split('@')[-1]}: {exc}") from exc
        self.description = f"PostgreSQL {self.engine.url.render_as_string(hide_password=True)}"
        self.meta, self.runs_t, self.results_t = _tables()
        with self._begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})
            self.meta.create_all(conn)

    def _begin(self):
        """A transaction; a database that cannot be reached becomes a StoreError naming it."""
        import contextlib

        import sqlalchemy as sa

        @contextlib.contextmanager
        def begin():
            try:
                with self.engine.begin() as conn:
                    yield conn
            except sa.exc.OperationalError as exc:
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                raise StoreError(f"{self.description}: {reason}; check the --store URL (or $EDGEBENCH_STORE) "
                                 "and that the server is running") from exc

        return begin()

    def _put_run(self, meta: dict[str, Any], rows: pd.DataFrame) -> None:
        import sqlalchemy as sa

        records = to_arrow(rows, INDEX_COLUMNS).to_pylist()
        run = to_arrow(_frame([meta], RUN_COLUMNS), RUN_COLUMNS).to_pylist()
        with self._begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:r))"), {"r": meta["run_id"]})
            conn.execute(sa.delete(self.results_t).where(self.results_t.c.run_id == meta["run_id"]))
            conn.execute(sa.delete(self.runs_t).where(self.runs_t.c.run_id == meta["run_id"]))
            conn.execute(sa.insert(self.runs_t), run)
            if records:
                conn.execute(sa.insert(self.results_t), records)

    def rebuild(self) -> int:
        import sqlalchemy as sa

        folders = run_folders(self.out_dir)
        total = 0
        for folder in folders:
            try:
                total += self.add_run(folder)
            except (InputError, OSError, ValueError) as exc:  # one unreadable folder must not hide the rest
                log.warning("%s not indexed: %s", folder, exc)
        present = {str(f.resolve()) for f in folders}
        prefix = self.out_dir.rstrip(os.sep) + os.sep
        with self._begin() as conn:
            mine = conn.execute(sa.select(self.runs_t.c.run_id, self.runs_t.c.path)
                                .where(self.runs_t.c.path.startswith(prefix, autoescape=True))).all()
            gone = [run_id for run_id, path in mine if path not in present]
            if gone:
                conn.execute(sa.delete(self.results_t).where(self.results_t.c.run_id.in_(gone)))
                conn.execute(sa.delete(self.runs_t).where(self.runs_t.c.run_id.in_(gone)))
        return total

    def _runs(self) -> pd.DataFrame:
        import pandas as pd
        import sqlalchemy as sa

        with self._begin() as conn:
            rows = conn.execute(sa.select(self.runs_t)).mappings().all()
        frame = pd.DataFrame([dict(r) for r in rows], columns=list(RUN_COLUMNS))
        return to_arrow(frame, RUN_COLUMNS).to_pandas()

    def _results(self, columns: list[str], filters: dict[str, Any]) -> pa.Table:
        import pandas as pd
        import sqlalchemy as sa

        query = sa.select(*[self.results_t.c[c] for c in columns])
        for name, value in filters.items():
            column = self.results_t.c[name]
            query = query.where(column.in_(list(value)) if isinstance(value, (list, tuple, set)) else column == value)
        with self._begin() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return arrow_schema(INDEX_COLUMNS, columns).empty_table()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
        return to_arrow(frame, {c: INDEX_COLUMNS[c] for c in columns})

    def close(self) -> None:
        self.engine.dispose()


def _frame(records: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(records, columns=list(columns))
