"""The run folder: the one place that owns its layout.

::

    <out>/<run-id>/
      run.json            who, when, command line, settings, tool version, each device (state, reason,
                          fingerprint, host key, bytes pushed, jobs done/total)
      results.parquet     one row per job (see RESULT_COLUMNS), flattened from the result documents
      samples.parquet     raw latency samples: one row per (job, sample)
      results/<device>/<job-id>.json   the result documents as the agent wrote them
      outputs/<device>/<job-id>.npz    model outputs on the eval data (with --eval)

Every file is written atomically (temp file in the same folder + rename), and each result document is
saved as soon as it arrives, so an interrupted run leaves readable results for every job that completed:
:meth:`RunStore.write_tables` rebuilds the tables from the saved documents at any time.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import secrets
import tempfile
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from agent.schema import SCHEMA_VERSION
from controller.errors import InputError

RUN_VERSION = 1  # history: 1 - first layout (run.json, results.parquet, samples.parquet, results/, outputs/)

#: Columns of results.parquet every consumer may rely on (more may follow them).
RESULT_COLUMNS = (
    "run_id", "device", "model", "variant", "threads", "job_id", "runtime", "runtime_version", "status",
    "error", "error_kind", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "count",
    "init_ms", "first_inference_ms", "peak_rss_kb", "rss_after_init_kb", "model_bytes", "model_sha256",
    "arch", "cpu_model", "cpu_count", "delegates", "noisy", "speedup_vs_fp32", "top1", "cosine_vs_fp32",
    "max_abs_vs_fp32", "rmse_vs_fp32", "device_fingerprint", "top1_drop_points", "worst_output", "drift",
    "drift_reasons",
    # schema 2 (issue 10): flags next to status ("noisy,throttled"; "" = clean), the model's own memory,
    # energy, placement, process repeats, what the delegates took
    "flags", "model_peak_kb", "mj_per_inference", "energy_source", "idle_mw", "affinity", "cluster",
    "governor", "freq_mhz", "process_count", "between_process_cv", "xnnpack", "batch", "delegate",
    "ops_delegated", "ops_on_cpu", "canary_ratio",
)
#: filled by controller.fleet.accuracy from the saved outputs (controller.variants.scoring.score)
ACCURACY_COLUMNS = ("top1", "cosine_vs_fp32", "max_abs_vs_fp32", "rmse_vs_fp32", "top1_drop_points",
                    "worst_output", "drift", "drift_reasons")
#: Columns of samples.parquet.
SAMPLE_COLUMNS = ("run_id", "device", "job_id", "model", "variant", "threads", "index", "latency_us")


def new_run_id(now: datetime.datetime | None = None) -> str:
    """A sortable, unique run id: ``YYYYmmddTHHMMSSZ-<6 hex>`` (UTC)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def creation_mode() -> int:
    """The mode a new file gets under this process's umask (0666 less the umask): the ONE file-mode rule
    for every file edgebench writes (run folders, tables, variants, manifests, known_hosts)."""
    try:  # Linux >= 4.7 reports it without the racy set-and-restore of os.umask
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


_UMASK_LOCK = threading.Lock()


def atomic_write(path: str, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename. The file gets ``mode``,
    by default :func:`creation_mode` (the user's umask; mkstemp alone would make every file 0600). The
    temp file is removed when anything fails (a full disk included): never a half-written or leftover
    file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path)[-20:])
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, creation_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8"))


def check_document(doc: Any, where: str) -> dict[str, Any]:
    """Return ``doc`` when this controller can read it: a JSON object whose ``schema_version`` is not
    newer than the agent schema it knows (``agent.schema.SCHEMA_VERSION``). Raises InputError naming
    ``where`` and the fix otherwise (a newer agent than this controller: upgrade edgebench)."""
    if not isinstance(doc, dict):
        raise InputError(f"{where}: not a result document (a JSON object was expected)")
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"{where}: result document without an integer schema_version")
    if version > SCHEMA_VERSION:
        raise InputError(f"{where}: result schema version {version} is newer than this controller reads "
                         f"({SCHEMA_VERSION}); upgrade edgebench on this machine")
    return doc


def read_document(path: str) -> dict[str, Any]:
    """A result document from ``path`` (checked by :func:`check_document`), migrated to the current schema
    by ``agent.schema.upgrade`` (version 1 documents gain the version-2 keys). Raises InputError naming
    the file when it cannot be read, is not JSON or not a document this controller reads."""
    from agent.errors import SchemaError
    from agent.schema import upgrade

    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"result document {path}: {exc}") from exc
    try:
        return upgrade(check_document(doc, path))
    except SchemaError as exc:
        raise InputError(f"result document {path}: {exc}") from exc


def result_row(run_id: str, device: str, doc: dict[str, Any]) -> dict[str, Any]:
    """One results.parquet row from a (current-schema) result document (missing parts become None)."""
    job = doc.get("job") or {}
    meta = job.get("meta") or {}
    timing = doc.get("timing") or {}
    memory = doc.get("memory") or {}
    runtime = doc.get("runtime") or {}
    model = doc.get("model") or {}
    env = doc.get("env") or {}
    error = doc.get("error") or {}
    row = {
        "run_id": run_id,
        "device": device,
        "model": meta.get("model_name"),
        "variant": meta.get("variant"),
        "threads": job.get("threads"),
        "job_id": job.get("id"),
        "runtime": runtime.get("name"),
        "runtime_version": runtime.get("version"),
        "status": doc.get("status"),
        "error": error.get("message"),
        "error_kind": error.get("kind"),
        "model_bytes": model.get("bytes"),
        "model_sha256": model.get("sha256") or meta.get("sha256"),
        "arch": env.get("arch"),
        "cpu_model": env.get("cpu_model"),
        "cpu_count": env.get("cpu_count"),
        "delegates": ",".join(runtime.get("delegates") or []),
        "noisy": timing.get("noisy"),
        "peak_rss_kb": memory.get("peak_rss_kb"),
        "rss_after_init_kb": memory.get("rss_after_init_kb"),
        "device_fingerprint": meta.get("device_fingerprint"),
    }
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "count", "init_ms",
                "first_inference_ms", "process_count", "between_process_cv"):
        row[key] = timing.get(key)
    energy = doc.get("energy") or {}
    delegation = runtime.get("delegation") or {}
    affinity = env.get("affinity")
    row.update(
        flags=",".join(doc.get("flags") or []), model_peak_kb=memory.get("model_peak_kb"),
        mj_per_inference=energy.get("mj_per_inference"), energy_source=energy.get("source"),
        idle_mw=energy.get("idle_mw"), affinity=",".join(str(c) for c in affinity) if affinity else None,
        cluster=env.get("cluster"), governor=env.get("governor"), freq_mhz=env.get("freq_mhz"),
        xnnpack=job.get("xnnpack"), batch=meta.get("batch"), delegate=runtime.get("delegate"),
        ops_delegated=delegation.get("ops_delegated"), ops_on_cpu=delegation.get("ops_on_cpu"),
        canary_ratio=(doc.get("canary") or {}).get("ratio"))
    for key in ACCURACY_COLUMNS + ("speedup_vs_fp32",):
        row[key] = None
    return row


def not_run_row(run_id: str, device: str, job: dict[str, Any], status: str, reason: str,
                kind: str) -> dict[str, Any]:
    """A results row for a job that did not run (``skipped`` by the preflight, ``not_run`` when its
    device failed), so the table shows every job asked for and why."""
    row = {key: None for key in RESULT_COLUMNS}
    meta = job.get("meta") or {}
    row.update(run_id=run_id, device=device, model=meta.get("model_name"), variant=meta.get("variant"),
               threads=job.get("threads"), job_id=job.get("id"), status=status, error=reason,
               error_kind=kind, model_sha256=meta.get("sha256"), model_bytes=meta.get("bytes"),
               xnnpack=job.get("xnnpack"), batch=meta.get("batch"), flags="")
    return row


def with_flag(flags: str | None, flag: str) -> str:
    """``flags`` (the comma-joined column) with ``flag`` added once, in agent.schema.FLAGS order."""
    from agent.schema import FLAGS

    present = set(filter(None, (flags or "").split(","))) | {flag}
    return ",".join([f for f in FLAGS if f in present] + sorted(present - set(FLAGS)))


def _twin(row: dict[str, Any]) -> tuple:
    """What a row's fp32 twin shares with it: device, model, threads, XNNPACK, batch size."""
    return row["device"], row["model"], row["threads"], row.get("xnnpack"), row.get("batch")


def add_speedup(rows: list[dict[str, Any]]) -> None:
    """Fill ``speedup_vs_fp32`` = fp32 p50 / this p50 for rows with an ok fp32 twin on the same device,
    model, threads, XNNPACK setting and batch size."""
    reference = {
        _twin(r): r["p50_ms"]
        for r in rows
        if r["variant"] == "fp32" and r["status"] == "ok" and r.get("p50_ms")
    }
    for row in rows:
        base = reference.get(_twin(row))
        if base and row["status"] == "ok" and row.get("p50_ms"):
            row["speedup_vs_fp32"] = base / row["p50_ms"]


class RunStore:
    """One run folder. Thread-safe: devices finishing in parallel save into it."""

    def __init__(self, root: str, run_id: str):
        self.run_id = run_id
        self.root = os.path.join(root, run_id)
        self._lock = threading.Lock()
        self._tables_lock = threading.Lock()
        self._extra_rows: dict[tuple[str, str], dict[str, Any]] = {}  # (device, job id) -> not-run row
        self._accuracy: dict[tuple[str, str], dict[str, Any]] = {}  # (device, job id) -> accuracy columns
        self.run_info: dict[str, Any] = {}

    @classmethod
    def create(cls, out_dir: str, run_info: dict[str, Any], run_id: str | None = None) -> RunStore:
        """Make ``<out_dir>/<run-id>/`` and write its first run.json. Raises InputError when the folder
        cannot be created."""
        run_id = run_id or new_run_id()
        store = cls(out_dir, run_id)
        try:
            os.makedirs(os.path.join(store.root, "results"), exist_ok=False)
            os.makedirs(os.path.join(store.root, "outputs"), exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the run folder {store.root}: {exc}; choose another --out") from exc
        store.run_info = {"run_version": RUN_VERSION, "schema_version": SCHEMA_VERSION, "run_id": run_id,
                          "state": "running", **run_info}
        store.save_run_info()
        return store

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def device_dir(self, kind: str, device: str) -> str:
        """``results/<device>`` or ``outputs/<device>``, created on first use."""
        folder = self.path(kind, device)
        os.makedirs(folder, exist_ok=True)
        return folder

    def save_run_info(self, **updates: Any) -> None:
        """Merge ``updates`` into run.json and rewrite it atomically."""
        with self._lock:
            self.run_info.update(updates)
            write_json(self.path("run.json"), self.run_info)

    def update_device(self, device: str, /, **fields: Any) -> None:
        """Merge ``fields`` into run.json's entry for ``device`` and rewrite it."""
        with self._lock:
            self.run_info.setdefault("devices", {}).setdefault(device, {}).update(fields)
            write_json(self.path("run.json"), self.run_info)

    def save_result(self, device: str, doc: dict[str, Any]) -> str:
        """Save one result document under results/<device>/<job-id>.json; return its path. Raises
        InputError for a document this controller cannot read (:func:`check_document`)."""
        check_document(doc, f"result from {device}")
        job_id = (doc.get("job") or {}).get("id") or "job"
        path = os.path.join(self.device_dir("results", device), f"{job_id}.json")
        write_json(path, doc)
        return path

    def add_not_run(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._extra_rows[(row["device"], row["job_id"])] = row

    def set_accuracy(self, device: str, job_id: str, values: dict[str, Any]) -> None:
        with self._lock:
            self._accuracy[(device, job_id)] = dict(values)

    def documents(self) -> Iterable[tuple[str, dict[str, Any]]]:
        """(device, result document) for every document saved so far."""
        results = self.path("results")
        for device in sorted(os.listdir(results)):
            folder = os.path.join(results, device)
            for name in sorted(os.listdir(folder)):
                if name.endswith(".json") and not name.startswith("."):  # temp files start with a dot
                    yield device, read_document(os.path.join(folder, name))

    def rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(result rows, sample rows) from everything saved so far."""
        rows, samples = [], []
        with self._lock:
            extra = dict(self._extra_rows)
            accuracy = dict(self._accuracy)
        for device, doc in self.documents():
            row = result_row(self.run_id, device, doc)
            row.update(accuracy.get((device, row["job_id"]), {}))
            if row.get("drift"):
                row["flags"] = with_flag(row["flags"], "drift")
            rows.append(row)
            for index, sample in enumerate((doc.get("timing") or {}).get("samples_us") or []):
                samples.append({"run_id": self.run_id, "device": device, "job_id": row["job_id"],
                                "model": row["model"], "variant": row["variant"], "threads": row["threads"],
                                "index": index, "latency_us": int(sample)})
        seen = {(r["device"], r["job_id"]) for r in rows}
        rows += [r for key, r in extra.items() if key not in seen]
        add_speedup(rows)
        return rows, samples

    def write_tables(self) -> pd.DataFrame:
        """Rebuild results.parquet and samples.parquet from the saved documents (atomically); return the
        results DataFrame."""
        import pandas as pd

        with self._tables_lock:  # device threads and Ctrl-C may both get here
            rows, samples = self.rows()
            results = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
            sample_frame = pd.DataFrame(samples, columns=list(SAMPLE_COLUMNS))
            for frame, name in ((results, "results.parquet"), (sample_frame, "samples.parquet")):
                buffer = io.BytesIO()
                frame.to_parquet(buffer, index=False)
                atomic_write(self.path(name), buffer.getvalue())  # the same mode rule as the JSON files
        return results


def load_results(run_dir: str) -> pd.DataFrame:
    """results.parquet of a run folder as a DataFrame. Raises InputError when it is not a run folder."""
    import pandas as pd

    path = os.path.join(run_dir, "results.parquet")
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(run_dir, "run.json")):
            raise InputError(f"{run_dir} is an unfinished run: it has run.json but no results.parquet (its "
                             "controller was killed before writing the tables); recover it with "
                             f"`edgebench run --resume {run_dir}` and the --devices it used")
        raise InputError(f"{run_dir} is not a run folder (no results.parquet); pass a folder under reports/")
    return pd.read_parquet(path)


def load_samples(run_dir: str) -> pd.DataFrame:
    """samples.parquet of a run folder (one row per raw latency sample, :data:`SAMPLE_COLUMNS`); an empty
    frame with those columns when the run has none. Raises InputError when it is not a run folder."""
    import pandas as pd

    if not os.path.isfile(os.path.join(run_dir, "results.parquet")):
        raise InputError(f"{run_dir} is not a run folder (no results.parquet); pass a folder under reports/")
    path = os.path.join(run_dir, "samples.parquet")
    if not os.path.isfile(path):
        return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    return pd.read_parquet(path)


def present(value: Any) -> bool:
    """True when a cell of a results table holds a value: not None and not NaN (pandas' missing)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def now_iso() -> str:
    """This moment in UTC as run.json writes it (``created``, ``finished``): ISO 8601 to the millisecond, so
    that runs started within one second (a nightly and its re-run, test nights) still order by time."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def load_run_info(run_dir: str) -> dict[str, Any]:
    """run.json of a run folder. Raises InputError when it is missing or not JSON."""
    path = os.path.join(run_dir, "run.json")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{run_dir} is not a run folder (no run.json); pass a folder under reports/") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({exc}); the run folder is damaged") from exc


def run_info(options, inventory_path: str, devices, models, version: str) -> dict[str, Any]:
    """The first content of run.json: who, when, the command line, settings, tool version, the devices
    (updated as they progress) and the models."""
    import getpass
    import socket
    import sys

    return {
        "created": now_iso(),
        "user": getpass.getuser(),
        "controller_host": socket.gethostname(),
        "command_line": list(sys.argv),
        "tool_version": version,
        "inventory": os.path.abspath(inventory_path),
        "settings": options.to_dict(),
        "devices": {d.name: {"transport": d.transport, "host": d.host, "state": "waiting", "bytes_pushed": 0}
                    for d in devices},
        "models": [{"name": m.name, "variant": m.variant, "path": m.path, "sha256": m.sha256,
                    "bytes": m.bytes} for m in models],
    }
