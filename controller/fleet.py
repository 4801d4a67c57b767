"""A run over the fleet: every selected device, in parallel, each through the same steps.

Per device (one connection, reused): connect → make sure the agent zipapp of this version is there
(pushed and sha256-verified only if absent) → ``agent info`` (runtime, disk, environment; once per run)
→ compatibility preflight per model (``controller.compat.check``; a model the device's runtime cannot
load is skipped with the reason) → push each model to ``<workdir>/models/<sha256>.tflite`` only if
absent, verifying its sha256 on the device before it gets its final name → one ``agent batch`` that runs
the jobs one at a time under the device lock (``flock``; a second controller waits up to the lock
timeout, then the device is reported busy) → each result document is fetched as soon as the agent
reports it done (so Ctrl-C keeps it) → outputs (``--eval``) → accuracy vs that device's fp32.

Devices run in parallel threads (at most ``parallel`` at once); a device that fails is recorded with its
reason (unreachable, auth refused, host key, python missing, disk full, busy) while the others finish.
Nothing is timed across SSH: the numbers come from the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import posixpath
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from agent.modelfile import sha256_of
from controller.errors import DeviceError, ExitCode, InputError
from controller.inventory import Device, resolve_python
from controller.store import RunStore, not_run_row
from controller.transport import CommandResult, Transport, open_transport

log = logging.getLogger(__name__)

MODEL_SUFFIX = ".tflite"
TABLES_EVERY_SECONDS = 5.0
#: DeviceError kinds that mean the device could not be reached at all (for the NO_DEVICE exit code)
UNREACHABLE_KINDS = ("unreachable", "auth", "host_key", "config")
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")

# Runs on the device: sha256 each pushed temp file; rename it to its final name only when it matches.
# argv: (temp, sha256, final)...; prints {"final": "ok" | "mismatch <got>"} as JSON.
_VERIFY_SCRIPT = """
import hashlib, json, os, sys
a = sys.argv[1:]
out = {}
for tmp, want, final in zip(a[0::3], a[1::3], a[2::3]):
    h = hashlib.sha256()
    with open(tmp, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    if h.hexdigest() == want:
        os.replace(tmp, final)
        out[final] = 'ok'
    else:
        os.unlink(tmp)
        out[final] = 'mismatch ' + h.hexdigest()
print(json.dumps(out))
"""


@dataclass(frozen=True)
class ModelRef:
    """One model file to run: its family name, variant, local path and content hash."""

    name: str
    variant: str
    path: str
    sha256: str
    bytes: int
    eval_path: str | None = None  #: the family's labelled eval set (from its manifest), if any


@dataclass
class RunOptions:
    """Everything ``edgebench run`` asks of a run (one dataclass travels, not a dozen arguments)."""

    threads: tuple[int, ...] = (1,)
    runs: int = 50
    warmup: int = 1
    warmup_min_seconds: float = 0.5
    min_seconds: float = 1.0
    max_seconds: float = 150.0
    job_timeout: float = 300.0
    eval_data: str | None = None  #: .npz with x (and y): outputs saved, accuracy computed
    use_manifest_eval: bool = True  #: use a family's own eval set when --eval is not given
    parallel: int = 8
    out_dir: str = "reports"
    shuffle_seed: int | None = None
    lock_timeout: float | None = None  #: overrides each device's lock_timeout
    seed: int = 0
    agent_pyz: str = ""
    #: devices start measuring together, after all are prepared (when all run at once)
    sync_start: bool = True
    sync_start_timeout: float = 120.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DeviceStatus:
    """Where one device is; sent to the progress display on every change."""

    name: str
    state: str = "waiting"  #: waiting, connecting, preflight, pushing, running, fetching, done, failed
    detail: str = ""
    bytes_pushed: int = 0
    jobs_done: int = 0
    jobs_total: int = 0
    jobs_failed: int = 0
    jobs_skipped: int = 0
    reason: str | None = None
    kind: str | None = None
    host_key: str | None = None
    fingerprint: str | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    agent_version: str | None = None
    python: str | None = None
    seconds: float = 0.0  #: controller wall time for this device
    batch_seconds: float = 0.0  #: wall time of the device's batch (its own measuring time)
    phases: dict[str, float] = field(default_factory=dict)  #: seconds per step (connect, agent, info ...)

    @property
    def failed(self) -> bool:
        return self.state == "failed"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FleetResult:
    """Per-device outcome of a run (like fabric's GroupResult): inspect, then decide the exit code."""

    run_dir: str
    devices: dict[str, DeviceStatus] = field(default_factory=dict)
    interrupted: bool = False
    results: Any = None  #: the results DataFrame as written at the end

    @property
    def failed(self) -> dict[str, DeviceStatus]:
        return {n: s for n, s in self.devices.items() if s.failed}

    def exit_code(self) -> ExitCode:
        """OK when every job on every device is ok; NO_DEVICE when no device could be reached (each
        failed to connect: unreachable, auth refused, host key, config); PARTIAL otherwise; INTERRUPTED
        after Ctrl-C."""
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.devices and all(s.failed and s.kind in UNREACHABLE_KINDS for s in self.devices.values()):
            return ExitCode.NO_DEVICE
        if self.failed or any(s.jobs_failed or s.jobs_skipped for s in self.devices.values()):
            return ExitCode.PARTIAL
        return ExitCode.OK


@functools.lru_cache(maxsize=256)
def _model_info(path: str, sha256: str) -> Any:
    """The model's :class:`~controller.tflite_model.ModelInfo`, read once per run however many devices
    check it (``sha256`` is part of the key, so a changed file is read again). Raises InputError."""
    from controller.tflite_model import read_model

    return read_model(path)


def collect_models(paths: Sequence[str]) -> list[ModelRef]:
    """The models named on the command line: .tflite files, or folders with a manifest.json (all of
    their variants). A file named ``<name>.<variant>.tflite`` gets that variant, any other its stem.

    Raises InputError naming a path that does not exist or is neither kind.
    """
    from controller import manifest as manifest_mod

    models: list[ModelRef] = []
    for path in paths:
        if os.path.isdir(path) or os.path.basename(path) == manifest_mod.MANIFEST_NAME:
            manifest = manifest_mod.load(path)
            eval_path = str(manifest.eval_path) if manifest.eval_path else None
            for variant in manifest.variants.values():
                models.append(ModelRef(manifest.name, variant.name, str(variant.path), variant.sha256,
                                       variant.bytes, eval_path))
        elif os.path.isfile(path):
            if not path.endswith(MODEL_SUFFIX):
                raise InputError(f"{path}: not a .tflite file or a folder with manifest.json")
            stem = os.path.basename(path)[: -len(MODEL_SUFFIX)]
            name, _, variant = stem.rpartition(".")
            if variant not in manifest_mod.VARIANTS:
                name, variant = stem, "-"
            models.append(ModelRef(name, variant, os.path.abspath(path), sha256_of(path),
                                   os.path.getsize(path)))
        else:
            raise InputError(f"{path}: no such model file or folder; give .tflite files or folders with a "
                             "manifest.json (made by edgebench convert)")
    if not models:
        raise InputError("no models to run")
    return models


def device_fingerprint(info: dict[str, Any], runtime: str, runtime_version: str) -> str:
    """A short hash of what makes timings comparable on a device: hardware, kernel, python, runtime."""
    env = info.get("env") or {}
    facts = [env.get(k) for k in ("arch", "cpu_model", "cpu_count", "mem_total_kb", "kernel", "python")]
    facts += [runtime, runtime_version]
    return hashlib.sha256(json.dumps(facts, default=str).encode()).hexdigest()[:16]


def pick_runtime(device: Device, info: dict[str, Any]) -> tuple[str, str]:
    """(name, version) of the runtime jobs will use: the device's ``runtime`` key, else the first one
    the agent can import. Raises DeviceError kind "runtime" when there is none (or not that one)."""
    usable = [r for r in info.get("runtimes") or [] if r.get("ok")]
    if device.runtime != "auto":
        usable = [r for r in usable if r.get("name") == device.runtime]
    if not usable:
        problems = "; ".join(f"{r.get('name')}: {r.get('error')}" for r in info.get("runtimes") or [])
        wanted = "a TFLite runtime" if device.runtime == "auto" else device.runtime
        raise DeviceError(device.name, f"{wanted} cannot be imported by {info.get('python_executable')} "
                          f"({problems or 'none found'}); run `edgebench bootstrap --device {device.name}`",
                          kind="runtime")
    return usable[0]["name"], str(usable[0].get("version"))


class DeviceSession:
    """One device over one transport: connect, resolve workdir and python, make sure the agent is there,
    ask it for ``info``. ``edgebench run``, ``devices --check`` and ``bootstrap`` all start this way."""

    def __init__(self, device: Device, agent_pyz: str,
                 notify: Callable[[DeviceStatus], None] | None = None):
        self.device = device
        self.agent_pyz = agent_pyz
        self.notify = notify or (lambda status: None)
        self.status = DeviceStatus(device.name)
        self.token = secrets.token_hex(4)  #: names this session's temp files on the device
        self.t: Transport | None = None
        self.workdir = ""
        self.python = ""
        self.agent = ""

    def _set(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.status, key, value)
        self.notify(dataclasses.replace(self.status))

    def open(self, subdirs: Sequence[str] = ()) -> None:
        """Connect, resolve ``~`` in the workdir, create it (and ``subdirs``), pick the python.
        Raises DeviceError / HostKeyError."""
        self._set(state="connecting", detail="")
        self.t = open_transport(self.device)
        self._set(host_key=self.t.host_key_fingerprint)
        self.workdir = self.t.expand(self.device.workdir).rstrip("/") or "/"
        for sub in ("agent", *subdirs):
            self.t.makedirs(posixpath.join(self.workdir, sub))
        self.resolve_python()

    def resolve_python(self) -> str:
        """Apply :func:`controller.inventory.resolve_python`, seeing whether bootstrap made a venv here."""
        venv = self.venv_python()
        self.python = resolve_python(self.device, venv_python=venv if self.t.exists(venv) else None)
        self._set(python=self.python)
        return self.python

    def venv_python(self) -> str:
        return posixpath.join(self.workdir, "venv", "bin", "python")

    def close(self) -> None:
        if self.t is not None:
            self.t.close()

    def run_python(self, argv: list[str], timeout: float | None = None, **kw: Any) -> CommandResult:
        """Run ``python argv...`` on the device (deadline: ``timeout``, default the device's
        ``command_timeout``); a missing interpreter is a DeviceError kind "python"."""
        timeout = self.device.command_timeout if timeout is None else timeout
        result = self.t.run([self.python, *argv], timeout=timeout, **kw)
        if result.exit_code in (126, 127):
            raise DeviceError(self.device.name, f"python {self.python!r} cannot be run on the device "
                              f"({result.stderr.strip()[-300:]}); install python3, set `python:` in the "
                              f"inventory, or run `edgebench bootstrap --device {self.device.name}`",
                              kind="python")
        return result

    def ensure_agent(self) -> str:
        """Push the agent zipapp unless this version (and content) is already on the device; return its
        remote path."""
        from agent import __version__

        digest = sha256_of(self.agent_pyz)
        remote = posixpath.join(self.workdir, "agent", f"edgebench-agent-{__version__}-{digest[:8]}.pyz")
        if not self.t.exists(remote):
            self._set(state="pushing", detail="agent")
            self.push_verified([(self.agent_pyz, digest, remote)])
        self.agent = remote
        return remote

    def push_verified(self, files: list[tuple[str, str, str]]) -> None:
        """Push (local, sha256, remote) files to temp names, verify on the device, rename into place.
        Raises DeviceError kind "push" on a mismatch, "disk_full" when the device's disk is full."""
        args: list[str] = []
        for local, digest, remote in files:
            tmp = f"{remote}.part-{self.token}"
            base = self.status.bytes_pushed
            self.t.put(local, tmp, on_bytes=lambda n, base=base: self._set(bytes_pushed=base + n))
            self._set(bytes_pushed=base + os.path.getsize(local))
            args += [tmp, digest, remote]
        result = self.run_python(["-c", _VERIFY_SCRIPT, *args])
        if not result.ok:
            disk = "No space" in result.stderr
            raise DeviceError(self.device.name, f"verifying pushed files failed: {result.stderr.strip()[-500:]}",
                              kind="disk_full" if disk else "push")
        verdicts = json.loads(result.stdout.strip().splitlines()[-1])
        bad = {k: v for k, v in verdicts.items() if v != "ok"}
        if bad:
            raise DeviceError(self.device.name, f"sha256 mismatch after upload (corrupted in transit or on "
                              f"the device's disk): {bad}", kind="push")

    def info(self, runtime: str | None = None) -> dict[str, Any]:
        """``agent info --json`` on the device. ``runtime`` ("auto" or a name) import-checks only the
        runtime jobs would use (a run); None checks every installed one (``devices --check``).
        Raises DeviceError kind "agent" when it fails."""
        argv = [self.agent, "info", "--json", "--workdir", self.workdir]
        if runtime is not None:
            argv += ["--runtime", runtime]
        result = self.run_python(argv)
        if not result.ok:
            raise DeviceError(self.device.name, f"`agent info` failed (exit {result.exit_code}): "
                              f"{result.stderr.strip()[-500:]}", kind="agent")
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            raise DeviceError(self.device.name, f"`agent info` printed no JSON: {result.stdout[-300:]!r}",
                              kind="agent") from exc


class DeviceRun(DeviceSession):
    """All of one device's work in one run, over one transport."""

    def __init__(self, device: Device, models: list[ModelRef], options: RunOptions, store: RunStore,
                 notify: Callable[[DeviceStatus], None]):
        super().__init__(device, options.agent_pyz, notify)
        self.models = models
        self.options = options
        self.store = store
        self.jobs: list[dict[str, Any]] = []
        self.fetched: set = set()
        self.skipped: set = set()  #: ids of jobs the preflight skipped (their rows are already stored)
        self.outputs: dict[str, str] = {}
        self.gate: StartGate | None = None
        self._gate_passed = False

    def run(self) -> DeviceStatus:
        """Do everything for this device; never raises for a device problem (it becomes the status)."""
        start = time.monotonic()
        try:
            self._work()
            self._set(state="done", detail="")
        except DeviceError as exc:
            self._fail(exc.reason, exc.kind)
        except Exception as exc:  # a bug must not take the other devices down; it is recorded
            log.exception("%s: internal error", self.device.name)
            self._fail(f"internal error: {type(exc).__name__}: {exc}", "internal")
        finally:
            self._pass_gate(wait=False)
            self.close()
            self.status.seconds = time.monotonic() - start
            self._record()
        return self.status

    def _pass_gate(self, wait: bool) -> None:
        if self.gate is not None and not self._gate_passed:
            self._gate_passed = True
            self.gate.ready()
            if wait:
                self._set(detail="waiting for the other devices to be ready")
                self.gate.wait()

    def _fail(self, reason: str, kind: str) -> None:
        self._set(state="failed", reason=reason, kind=kind, detail=reason)
        for job in self.jobs or self._planned_jobs():
            if job["id"] not in self.fetched and job["id"] not in self.skipped:
                self.store.add_not_run(not_run_row(self.store.run_id, self.device.name, job, "not_run",
                                                   reason, kind))

    def _record(self) -> None:
        fields = self.status.to_dict()
        fields.update(transport=self.device.transport, host=self.device.host, workdir=self.device.workdir,
                      tags=list(self.device.tags))
        self.store.update_device(self.device.name, **fields)

    def _work(self) -> None:
        clock = _Phases(self.status.phases)
        run_dir = posixpath.join("runs", self.store.run_id)
        with clock("connect"):
            self.open(subdirs=("models", "data", posixpath.join(run_dir, "results"),
                               posixpath.join(run_dir, "outputs")))
        run_dir = posixpath.join(self.workdir, run_dir)
        self._set(state="preflight", detail="agent")
        with clock("agent"):
            self.ensure_agent()
        with clock("info"):
            info = self.info(runtime=self.device.runtime)
        runtime, version = pick_runtime(self.device, info)
        fingerprint = device_fingerprint(info, runtime, version)
        self._set(runtime=runtime, runtime_version=version, agent_version=info.get("agent_version"),
                  fingerprint=fingerprint)
        with clock("preflight"):
            indices = self._preflight(runtime, version)
            runnable = [self.models[i] for i in indices]
            eval_files = self._eval_files(runnable)
        with clock("push"):
            self._push(runnable, eval_files, info)
        self.jobs = self._make_jobs(indices, runtime, eval_files, run_dir, fingerprint)
        self._set(jobs_total=len(self.jobs) + self.status.jobs_skipped)
        with clock("gate"):
            self._pass_gate(wait=bool(self.jobs))
        if self.jobs:
            with clock("batch"):
                self._batch(run_dir)
            with clock("fetch"):
                self._fetch_missing(run_dir)
                if any(j.get("save_outputs") for j in self.jobs):
                    self._fetch_outputs()

    def _preflight(self, runtime: str, version: str) -> list[int]:
        """Indices (into ``self.models``) of the models this device's runtime can load; the others'
        jobs are recorded as skipped with the reason."""
        from controller import compat

        runnable = []
        for index, model in enumerate(self.models):
            try:
                verdict = compat.check_info(_model_info(model.path, model.sha256), runtime, version)
            except InputError as exc:  # not a model / truncated: skip it, run the others
                self._skip(index, str(exc), "bad_model")
                continue
            if verdict.ok:
                runnable.append(index)
                continue
            self._skip(index, f"{runtime} {version} cannot load it: " + "; ".join(verdict.reasons), "incompatible")
        return runnable

    def _skip(self, index: int, reason: str, kind: str) -> None:
        """Record every job of model ``index`` as skipped with ``reason`` (never pushed, never run)."""
        for job in self._planned_jobs([index]):
            self.store.add_not_run(not_run_row(self.store.run_id, self.device.name, job, "skipped", reason, kind))
            self.skipped.add(job["id"])
            self.status.jobs_skipped += 1

    def _eval_files(self, models: list[ModelRef]) -> dict[str, tuple[str, str]]:
        """model family name -> (local eval .npz, its sha256) for the families that get outputs saved."""
        files: dict[str, tuple[str, str]] = {}
        for model in models:
            path = self.options.eval_data or (model.eval_path if self.options.use_manifest_eval else None)
            if path and model.name not in files:
                files[model.name] = (path, sha256_of(path))
        return files

    def _push(self, models: list[ModelRef], eval_files: dict[str, tuple[str, str]], info: dict) -> None:
        wanted: dict[str, tuple[str, str, str]] = {}
        for model in models:
            wanted[model.sha256] = (model.path, model.sha256, self._model_path(model))
        for local, digest in eval_files.values():
            wanted[digest] = (local, digest, posixpath.join(self.workdir, "data", f"{digest}.npz"))
        missing = [f for f in wanted.values() if not self.t.exists(f[2])]
        if not missing:
            return
        need_kb = sum(os.path.getsize(f[0]) for f in missing) // 1024 + 1
        free_kb = info.get("disk_free_kb")
        if isinstance(free_kb, (int, float)) and free_kb < need_kb * 2:
            raise DeviceError(self.device.name, f"disk full: {free_kb} KiB free in {self.workdir}, the models "
                              f"need {need_kb} KiB (twice that while verifying); free space or set another "
                              "workdir", kind="disk_full")
        self._set(state="pushing", detail=f"{len(missing)} file(s)")
        self.push_verified(missing)

    def _model_path(self, model: ModelRef) -> str:
        return posixpath.join(self.workdir, "models", f"{model.sha256}{MODEL_SUFFIX}")

    def _threads(self) -> tuple[int, ...]:
        return self.device.threads or self.options.threads

    def _planned_jobs(self, indices: list[int] | None = None) -> list[dict[str, Any]]:
        """The jobs asked for (of the models at ``indices``, default all), without device paths (for rows
        of jobs that never ran). Job ids carry the model's position, so a model given twice has two."""
        jobs = []
        for index in indices if indices is not None else range(len(self.models)):
            model = self.models[index]
            for threads in self._threads():
                jobs.append({"id": _job_id(index, model, threads), "threads": threads,
                             "meta": {"model_name": model.name, "variant": model.variant,
                                      "sha256": model.sha256, "bytes": model.bytes}})
        return jobs

    def _make_jobs(self, indices: list[int], runtime: str, eval_files: dict[str, tuple[str, str]],
                   run_dir: str, fingerprint: str) -> list[dict[str, Any]]:
        from agent.job import JobSpec

        o = self.options
        jobs = []
        for index in indices:
            model = self.models[index]
            data = eval_files.get(model.name)
            for threads in self._threads():
                job_id = _job_id(index, model, threads)
                spec = JobSpec(
                    model=self._model_path(model), id=job_id, threads=threads, runtime=runtime,
                    warmup=o.warmup, warmup_min_seconds=o.warmup_min_seconds, runs=o.runs,
                    min_seconds=o.min_seconds, max_seconds=o.max_seconds, timeout=o.job_timeout, seed=o.seed,
                    inputs=posixpath.join(self.workdir, "data", f"{data[1]}.npz") if data else None,
                    save_outputs=posixpath.join(run_dir, "outputs", f"{job_id}.npz") if data else None,
                    meta={"device": self.device.name, "model_name": model.name, "variant": model.variant,
                          "sha256": model.sha256, "device_fingerprint": fingerprint},
                )
                spec.validate()
                jobs.append(spec.to_dict())
        return jobs

    def _batch(self, run_dir: str) -> None:
        jobs_file = posixpath.join(run_dir, "jobs.json")
        self.t.put_bytes(json.dumps(self.jobs, indent=1).encode(), jobs_file)
        lock_timeout = self.options.lock_timeout
        if lock_timeout is None:
            lock_timeout = self.device.lock_timeout
        argv = [self.agent, "batch", jobs_file, "--out", posixpath.join(run_dir, "results"),
                "--lock", posixpath.join(self.workdir, "lock"), "--lock-timeout", f"{lock_timeout:g}",
                "--stop-on-stdin-eof"]
        if self.options.shuffle_seed is not None:
            argv += ["--shuffle-seed", str(self.options.shuffle_seed)]
        # Each job is bounded by its own worker deadline on the device; the batch by their sum.
        deadline = lock_timeout + len(self.jobs) * (self.options.job_timeout + 30) + 60
        self._set(state="running", detail="waiting for the device lock")
        start = time.monotonic()
        # stdin stays open while the batch runs: if this controller dies or gives up (Ctrl-C, deadline,
        # dead link), the device sees EOF and stops the batch, freeing its lock.
        result = self.run_python(argv, timeout=deadline, on_line=lambda line: self._on_line(line, run_dir),
                                 stdin_open=True)
        self.status.batch_seconds = time.monotonic() - start
        if result.exit_code == 4:
            raise DeviceError(self.device.name, f"busy: another controller holds the device lock "
                              f"({posixpath.join(self.workdir, 'lock')}) and it was not released within "
                              f"{lock_timeout:g} s; try again later or raise --lock-timeout", kind="busy")
        if result.exit_code not in (0, 1):
            raise DeviceError(self.device.name, f"`agent batch` failed (exit {result.exit_code}): "
                              f"{result.stderr.strip()[-800:]}", kind="agent")

    def _on_line(self, line: str, run_dir: str) -> None:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            log.info("%s: agent: %s", self.device.name, line)
            return
        if not isinstance(event, dict):
            return
        if event.get("event") == "start":
            self._set(detail=f"job {event.get('index', 0) + 1}/{event.get('total', len(self.jobs))}")
        elif event.get("event") == "done" and event.get("id"):
            self._fetch_result(run_dir, str(event["id"]))

    def _fetch_result(self, run_dir: str, job_id: str) -> None:
        if job_id in self.fetched:
            return
        local = os.path.join(self.store.device_dir("results", self.device.name), f".fetch-{job_id}.json")
        self.t.get(posixpath.join(run_dir, "results", f"{job_id}.json"), local)
        with open(local, encoding="utf-8") as fh:
            doc = json.load(fh)
        os.unlink(local)
        self.store.save_result(self.device.name, doc)
        self.fetched.add(job_id)
        failed = doc.get("status") != "ok"
        self._set(jobs_done=self.status.jobs_done + 1, jobs_failed=self.status.jobs_failed + int(failed))

    def _fetch_missing(self, run_dir: str) -> None:
        self._set(state="fetching", detail="results")
        for job in self.jobs:
            if job["id"] not in self.fetched:
                remote = posixpath.join(run_dir, "results", f"{job['id']}.json")
                if self.t.exists(remote):
                    self._fetch_result(run_dir, job["id"])
                else:
                    self.store.add_not_run(not_run_row(self.store.run_id, self.device.name, job, "not_run",
                                                       "the agent wrote no result document", "agent"))
                    self._set(jobs_failed=self.status.jobs_failed + 1)

    def _fetch_outputs(self) -> None:
        self._set(detail="outputs")
        folder = self.store.device_dir("outputs", self.device.name)
        for job in self.jobs:
            remote = job.get("save_outputs")
            if remote and job["id"] in self.fetched and self.t.exists(remote):
                local = os.path.join(folder, f"{job['id']}.npz")
                self.t.get(remote, local)
                self.outputs[job["id"]] = local


class StartGate:
    """Devices begin measuring together: each waits here, after its preparation (connect, agent, info,
    pushes), until every device of the run is prepared or has failed - so no device measures while the
    controller still pushes to, or probes, the others. Waits at most ``deadline`` seconds."""

    def __init__(self, count: int, deadline: float):
        self._cond = threading.Condition()
        self._pending = count
        self.deadline = deadline

    def ready(self) -> None:
        """This device is prepared (or gave up): one fewer to wait for."""
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()

    def wait(self) -> None:
        end = time.monotonic() + self.deadline
        with self._cond:
            while self._pending > 0 and end - time.monotonic() > 0:
                self._cond.wait(end - time.monotonic())


class _Phases:
    """Context manager factory that adds each step's wall seconds to a dict."""

    def __init__(self, into: dict[str, float]):
        self.into = into

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.into[name] = round(self.into.get(name, 0.0) + time.monotonic() - start, 3)


def _job_id(index: int, model: ModelRef, threads: int) -> str:
    """A file-name-safe, unique job id: ``<index>-<model>-<variant>-t<threads>``."""
    slug = _SLUG.sub("_", f"{model.name}-{model.variant}")[:60]
    return f"{index:03d}-{slug}-t{threads}"


def run_fleet(devices: Sequence[Device], models: list[ModelRef], options: RunOptions, store: RunStore,
              notify: Callable[[DeviceStatus], None] | None = None,
              accuracy: Callable[[DeviceRun], None] | None = None) -> FleetResult:
    """Run ``models`` on ``devices`` (at most ``options.parallel`` at once) and save into ``store``.

    Every device is tried; each ends ``done`` or ``failed`` with its reason. ``accuracy(device_run)`` is
    called after a device's outputs are home. Tables are rewritten after each device, and once more at the
    end (also after Ctrl-C, which is re-raised after the saving). Never raises for a device problem.
    """
    notify = notify or (lambda status: None)
    result = FleetResult(run_dir=store.root)
    gate = threading.Semaphore(max(1, options.parallel))
    runs = [DeviceRun(d, models, options, store, notify) for d in devices]
    if options.sync_start and len(runs) > 1 and options.parallel >= len(runs):
        start_gate = StartGate(len(runs), options.sync_start_timeout)
        for r in runs:
            r.gate = start_gate
    for r in runs:
        result.devices[r.device.name] = r.status
        notify(dataclasses.replace(r.status))

    last_write = [time.monotonic()]

    def work(device_run: DeviceRun) -> None:
        with gate:
            device_run.run()
            if accuracy is not None and not device_run.status.failed and device_run.outputs:
                try:
                    accuracy(device_run)
                except Exception as exc:  # accuracy is data; a failure there is recorded, not fatal
                    log.exception("%s: accuracy", device_run.device.name)
                    device_run._set(detail=f"accuracy failed: {exc}")
            # The documents are on disk already; the tables are rebuilt from them at most every few
            # seconds while devices still measure (and always at the end or on Ctrl-C).
            if time.monotonic() - last_write[0] > TABLES_EVERY_SECONDS:
                last_write[0] = time.monotonic()
                store.write_tables()

    threads = [threading.Thread(target=work, args=(r,), name=f"device-{r.device.name}", daemon=True)
               for r in runs]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
    except KeyboardInterrupt:
        result.interrupted = True
        for device_run in runs:  # stop the work in flight: local commands killed, SSH links closed
            device_run.close()
        store.save_run_info(interrupted=True)
        store.write_tables()
        raise
    result.results = store.write_tables()
    return result


def agent_zipapp() -> str:
    """Path of the agent zipapp to push: built from the installed ``agent`` package with
    ``python -m agent.build``, cached per hash of the agent's sources (so an unchanged agent is the same
    file, and devices that have it get nothing pushed). Raises ToolError when the build fails."""
    import subprocess
    import sys

    import agent
    from controller.errors import ToolError

    package = os.path.dirname(agent.__file__)
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(package)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, package).encode() + b"\0")
            with open(path, "rb") as fh:
                digest.update(fh.read())
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgebench",
                         "agent-build", digest.hexdigest()[:16])
    target = os.path.join(cache, "edgebench-agent.pyz")
    if os.path.isfile(target):
        return target
    os.makedirs(cache, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    proc = subprocess.run([sys.executable, "-m", "agent.build", tmp], check=False, capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(package))
    if proc.returncode != 0 or not os.path.isfile(tmp):
        raise ToolError(f"building the agent zipapp failed (python -m agent.build, exit {proc.returncode}): "
                        f"{proc.stderr.strip()[-500:]}")
    os.replace(tmp, target)
    return target


def check_eval_data(path: str) -> None:
    """Raise InputError unless ``path`` is a .npz (or .npy) with the eval inputs (``x`` or per-input
    arrays) and, if present, integer labels ``y`` with one label per sample."""
    import numpy as np

    if not os.path.isfile(path):
        raise InputError(f"--eval {path}: no such file; give a .npz with x (inputs) and y (labels)")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"--eval {path}: not a readable .npz/.npy file ({exc})") from exc
    if isinstance(data, np.ndarray):
        return
    with data:
        if not data.files:
            raise InputError(f"--eval {path}: the .npz holds no arrays; it needs x (and optional y)")
        if "y" in data.files:
            labels = data["y"]
            inputs = [data[k] for k in data.files if k not in ("y", "labels")]
            if labels.dtype.kind not in "iu" or labels.ndim != 1:
                raise InputError(f"--eval {path}: y must be a 1-D array of integer labels, got "
                                 f"{labels.dtype} {labels.shape}")
            if inputs and len(inputs[0]) != len(labels):
                raise InputError(f"--eval {path}: {len(inputs[0])} input samples but {len(labels)} labels")


def score_outputs(device_run: DeviceRun) -> None:
    """Accuracy of each job of one device from its saved outputs: top-1 vs the eval set's labels, and
    cosine / max-abs / RMSE vs the same device's fp32 outputs (same model, same threads if there is one).
    Stored into the run's results (``top1``, ``cosine_vs_fp32``, ``max_abs_vs_fp32``, ``rmse_vs_fp32``)."""
    import numpy as np

    from controller import accuracy

    def first_output(path: str) -> np.ndarray:
        with np.load(path, allow_pickle=False) as data:
            names = [k for k in data.files if not k.startswith("raw/")]
            return np.asarray(data[names[0]], dtype=np.float32)

    outputs = device_run.outputs
    by_id = {job["id"]: job for job in device_run.jobs}
    loaded = {job_id: first_output(path) for job_id, path in outputs.items()}
    labels_cache: dict[str, Any] = {}
    for job_id, values in loaded.items():
        job = by_id[job_id]
        meta = job["meta"]
        scores: dict[str, Any] = {}
        eval_file = device_run.options.eval_data or next(
            (m.eval_path for m in device_run.models if m.name == meta["model_name"]), None)
        if eval_file and eval_file not in labels_cache:
            with np.load(eval_file, allow_pickle=False) as data:
                labels_cache[eval_file] = data["y"] if "y" in data.files else None
        labels = labels_cache.get(eval_file) if eval_file else None
        if labels is not None and values.ndim >= 2 and len(values) == len(labels):
            scores["top1"] = float(accuracy.top1(values, labels))
        ref_id = next((i for i, j in by_id.items() if i in loaded and j["meta"]["variant"] == "fp32"
                       and j["meta"]["model_name"] == meta["model_name"] and j["threads"] == job["threads"]),
                      None)
        ref_id = ref_id or next((i for i, j in by_id.items() if i in loaded and j["meta"]["variant"] == "fp32"
                                 and j["meta"]["model_name"] == meta["model_name"]), None)
        if ref_id is not None and loaded[ref_id].shape == values.shape:
            metrics = accuracy.compare(loaded[ref_id], values)
            scores.update(cosine_vs_fp32=float(metrics["cosine"]), max_abs_vs_fp32=float(metrics["max_abs"]),
                          rmse_vs_fp32=float(metrics["rmse"]))
        device_run.store.set_accuracy(device_run.device.name, job_id, scores)
