"""All of one device's work in one run, over one transport: connect, probe, preflight, stage (push +
verify + ``info``, one command), one ``agent batch`` under the device lock with the jobs on its stdin and
each result document inline in its ``done`` event, outputs, accuracy. Round trips after the handshake
(``docs/internals.md``, "The lean round trip"): 3 before measuring starts on a first run, 2 when
nothing needs pushing and the device's info is cached.

Nothing is timed across SSH: the numbers come from the device. A device problem never escapes
:meth:`DeviceRun.run`: it becomes the device's status (state ``failed`` with reason and kind) and the
jobs that did not run are recorded as ``not_run`` rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import posixpath
import threading
import time
from typing import Any, Callable

from agent.errors import AgentError
from agent.modelfile import sha256_of
from controller.errors import DeviceError, InputError, UsageError
from controller.fleet import sweep as sweeps
from controller.fleet.accuracy import score_jobs
from controller.fleet.daemon import DaemonJobs
from controller.fleet.info_cache import InfoCache
from controller.fleet.inventory import Device
from controller.fleet.models import MODEL_SUFFIX, ModelRef
from controller.fleet.options import RunOptions
from controller.fleet.part_files import sweep_stale
from controller.fleet.prepare import prepare
from controller.fleet.session import DeviceSession, DeviceStatus, agent_event, device_fingerprint
from controller.fleet.step_hooks import enter_step
from controller.fleet.store import RunStore, not_run_row
from controller.fleet.sweep import Setting, input_suffix

log = logging.getLogger(__name__)



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
        self.stopping = False  #: set by stop() on Ctrl-C / SIGTERM before the link is closed: whatever fails from
        #: now on failed because of the interrupt, and a daemon device must not reconnect
        self._recorded = False
        self.info_cache = InfoCache()
        self._first_start: float | None = None  #: device clock: when the batch's first job started

    def stop(self) -> None:
        """Ctrl-C / SIGTERM: close the link so the work in flight unwinds (called from the main thread)."""
        self.stopping = True
        self.close()

    def run(self) -> DeviceStatus:
        """Do everything for this device; never raises for a device problem (it becomes the status)."""
        start = time.monotonic()
        try:
            self._work()
            self._set(state="done", detail="")
        except Exception as exc:
            if isinstance(exc, DeviceError) and exc.kind == "interrupted":  # its own words (e.g. --resume)
                self._fail(exc.reason, exc.kind)
            elif self.stopping:  # the link was closed under the work: not the device's fault, not a bug
                self._fail(f"interrupted (Ctrl-C / SIGTERM) while {self.status.state}", "interrupted")
            elif isinstance(exc, DeviceError):
                self._fail(exc.reason, exc.kind)
            else:  # a bug must not take the other devices down; it is recorded
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

    def finish_interrupted(self) -> None:
        """After Ctrl-C, from the main thread: a device whose thread has not recorded its end yet is
        recorded as interrupted now (its thread may still be unwinding)."""
        if not self._recorded and self.status.state not in ("failed", "done"):  # else its thread said it
            self._fail(f"interrupted (Ctrl-C / SIGTERM) while {self.status.state}", "interrupted")
            self._record()

    def _record(self) -> None:
        self._recorded = True
        fields = self.status.to_dict()
        fields.update(transport=self.device.transport, host=self.device.host, workdir=self.device.workdir,
                      tags=list(self.device.tags))
        self.store.update_device(self.device.name, **fields)

    def _work(self) -> None:
        clock = _Phases(self.status.phases, lambda: self.stopping)
        run_dir = posixpath.join("runs", self.store.run_id)
        with clock("connect"):
            self.connect()
        with clock("probe"):
            self.probe(subdirs=(posixpath.join(run_dir, "results"), posixpath.join(run_dir, "outputs")))
            sweep_stale(self)  # the probe removed part files a killed controller left behind
        run_dir = posixpath.join(self.workdir, run_dir)
        self._set(state="preflight", detail="")
        info, runtime, version, verdicts = prepare(self, clock)
        fingerprint = device_fingerprint(info, runtime, version)
        self._set(runtime=runtime, runtime_version=version, agent_version=info.get("agent_version"),
                  fingerprint=fingerprint)
        for index, (reason, kind) in sorted(verdicts.items()):
            if reason is not None:
                self._skip(index, reason, kind)
        indices = [i for i, (reason, _) in sorted(verdicts.items()) if reason is None]
        eval_files = self._eval_files([self.models[i] for i in indices])
        self.jobs = self._make_jobs(indices, runtime, eval_files, run_dir, fingerprint)
        self._set(jobs_total=len(self.jobs) + self.status.jobs_skipped)
        with clock("gate"):
            self._pass_gate(wait=bool(self.jobs))
        if self.jobs:
            with clock("batch"):
                if self.device.daemon:  # through the device's agent daemon: survives a dropped link
                    DaemonJobs(self).collect(run_dir)
                else:
                    self._batch(run_dir)
            with clock("fetch"):
                self._fetch_missing(run_dir)
                if any(j.get("save_outputs") for j in self.jobs):
                    self._fetch_outputs()
            if self.outputs:
                with clock("accuracy"):
                    self._score()

    def _score(self) -> None:
        """Store the accuracy columns of this device's jobs (:func:`controller.fleet.accuracy.score_jobs`).
        Outputs that cannot be read are logged and said in the device's detail; the measurements stay."""
        labels_of = {m.name: self.options.eval_data or m.eval_path for m in self.models}
        try:
            columns = score_jobs(self.jobs, self.outputs, labels_of, self.options.thresholds)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: accuracy could not be computed: %s", self.device.name, exc)
            self._set(detail=f"accuracy failed: {exc}")
            return
        for job_id, values in columns.items():
            self.store.set_accuracy(self.device.name, job_id, values)

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

    def _model_path(self, model: ModelRef) -> str:
        return posixpath.join(self.workdir, "models", f"{model.sha256}{MODEL_SUFFIX}")

    def _threads(self) -> tuple[int, ...]:
        return self.device.threads or self.options.threads

    def _settings(self, model: ModelRef) -> list[Setting]:
        """The sweep of one model on this device: threads x XNNPACK on/off x batch sizes (the batch sweep
        only for a model whose inputs have a dynamic first dimension)."""
        return sweeps.sweep(self._threads(), self.options.xnnpack or (self.options.job.xnnpack,),
                            self.options.batch_sizes, model)

    def _planned_jobs(self, indices: list[int] | None = None) -> list[dict[str, Any]]:
        """The jobs asked for (of the models at ``indices``, default all), without device paths (for rows
        of jobs that never ran). Job ids carry the model's position, so a model given twice has two."""
        jobs = []
        for index in indices if indices is not None else range(len(self.models)):
            model = self.models[index]
            for setting in self._settings(model):
                jobs.append({"id": job_id(index, model, setting), "threads": setting.threads,
                             "xnnpack": setting.xnnpack,
                             "meta": {"model_name": model.name, "variant": model.variant, "batch": setting.batch,
                                      "sha256": model.sha256, "bytes": model.bytes}})
        return jobs

    def _make_jobs(self, indices: list[int], runtime: str, eval_files: dict[str, tuple[str, str]],
                   run_dir: str, fingerprint: str) -> list[dict[str, Any]]:
        """The job dicts for the batch: the run's JobSpec template with each model's device path, id,
        setting (threads, XNNPACK, batch size), runtime, CPUs, eval or --inputs data filled in.

        A job of another batch size than the data's runs on random inputs (the eval set holds single
        samples) and saves no outputs. Raises UsageError when a filled-in job is invalid."""
        jobs = []
        template = self.options.job
        inputs = self._inputs_remote()
        for index in indices:
            model = self.models[index]
            data = eval_files.get(model.name)
            names = sweeps.input_names(model) if template.input_shapes else set()
            for setting in self._settings(model):
                jid = job_id(index, model, setting)
                with_data = setting.batch in (None, 1)
                # --input-shape NAME=... resizes the models that have an input NAME
                shapes = {name: dims for name, dims in template.input_shapes.items() if name in names}
                shapes.update(setting.input_shapes)
                spec = dataclasses.replace(
                    template, model=self._model_path(model), id=jid, threads=setting.threads,
                    xnnpack=setting.xnnpack, runtime=runtime, input_shapes=shapes,
                    cpus=self.device.cpus or template.cpus,
                    inputs=(posixpath.join(self.workdir, "data", f"{data[1]}.npz") if data else inputs)
                    if with_data else None,
                    save_outputs=posixpath.join(run_dir, "outputs", f"{jid}.npz") if data and with_data else None,
                    meta={**template.meta, "device": self.device.name, "model_name": model.name,
                          "variant": model.variant, "sha256": model.sha256, "device_fingerprint": fingerprint,
                          "batch": setting.batch},
                )
                try:
                    spec.validate()
                except AgentError as exc:
                    raise UsageError(f"device {self.device.name}, job {jid}: {exc}") from exc
                jobs.append(spec.to_dict())
        return jobs

    def _inputs_remote(self) -> str | None:
        """Where the run's --inputs file is on the device (pushed by :meth:`_push`), or None."""
        local = self.options.job.inputs
        return posixpath.join(self.workdir, "data", f"{sha256_of(local)}{input_suffix(local)}") if local else None

    def _batch(self, run_dir: str) -> None:
        """One ``agent batch`` with the jobs as the first line of its stdin (held open after it, so a
        controller that goes away stops the batch) and every document inline in its ``done`` event."""
        lock_timeout = self.options.lock_timeout
        if lock_timeout is None:
            lock_timeout = self.device.lock_timeout
        extra = [] if self.options.shuffle_seed is None else ["--shuffle-seed", str(self.options.shuffle_seed)]
        # Each job is bounded by its own worker deadlines on the device (one per repeat); the batch by their sum.
        per_job = self.options.job.device_seconds()
        self._set(state="running", detail="waiting for the device lock",
                  round_trips_before_measuring=self.t.round_trips + 1)
        start = time.monotonic()
        try:
            self.run_batch(self.jobs, posixpath.join(run_dir, "results"), lock_timeout, per_job,
                           lambda line: self._on_line(line, run_dir), extra)
        finally:
            self.status.batch_seconds = time.monotonic() - start

    def _on_line(self, line: str, run_dir: str) -> None:
        event = agent_event(line)
        if event is None:
            log.info("%s: agent: %s", self.device.name, line)
            return
        stamp = event.get("time")  # the device's clock: only differences of it are used
        if isinstance(stamp, (int, float)):
            if event.get("event") == "start" and self._first_start is None:
                self._first_start = stamp
            elif event.get("event") == "done" and self._first_start is not None:
                self.status.measuring_seconds = round(stamp - self._first_start, 3)
        if event.get("event") == "start":
            self._set(detail=f"job {event.get('index', 0) + 1}/{event.get('total', len(self.jobs))}")
        elif event.get("event") == "done" and isinstance(event.get("document"), dict):
            # inline (`batch --inline`), or measured when the device's disk could not hold it
            self._keep_result(event["document"])
        elif event.get("event") == "done" and event.get("id"):
            self._fetch_result(run_dir, str(event["id"]))

    def _fetch_result(self, run_dir: str, job_id: str) -> None:
        """Download job ``job_id``'s document (when its ``done`` event did not carry it) and save it."""
        if job_id in self.fetched:
            return
        local = os.path.join(self.store.device_dir("results", self.device.name), f".fetch-{job_id}.json")
        try:  # (inside: a download cut off by a dead link leaves no partial file in the run folder)
            self.t.get(posixpath.join(run_dir, "results", f"{job_id}.json"), local)
            with open(local, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise DeviceError(self.device.name, f"the result of job {job_id} is not readable JSON ({exc})",
                              kind="agent") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local)
        self._keep_result(doc)

    def _keep_result(self, doc: dict[str, Any]) -> None:
        """Save one job's result document in the run folder (once) and count it. Raises DeviceError when
        the store refuses it (e.g. a newer agent's schema)."""
        job_id = str((doc.get("job") or {}).get("id"))
        if job_id in self.fetched:
            return
        try:
            self.store.save_result(self.device.name, doc)
        except InputError as exc:  # e.g. a newer agent's schema: the device cannot be used as it is
            raise DeviceError(self.device.name, str(exc), kind="agent") from exc
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


class _Stopped(Exception):
    """Raised at the start of a step once the run was interrupted (internal to this module)."""


class _Phases:
    """Context manager factory that adds each step's wall seconds to a dict."""

    def __init__(self, into: dict[str, float], stopping: Callable[[], bool] = lambda: False):
        self.into = into
        self.stopping = stopping

    @contextlib.contextmanager
    def __call__(self, name: str):
        enter_step(name, self.stopping)
        if self.stopping():  # interrupted: start no new step (a local transport would reconnect)
            raise _Stopped(name)
        start = time.monotonic()
        try:
            yield
        finally:
            self.into[name] = round(self.into.get(name, 0.0) + time.monotonic() - start, 3)


def job_id(index: int, model: ModelRef, setting: Setting | int) -> str:
    """The job id of a model's sweep point (:func:`controller.fleet.sweep.job_id`; a bare thread count
    is that many threads, XNNPACK on, the model's own shape): ``<index>-<model>-<variant>-t<threads>``."""
    return sweeps.job_id(index, model, setting)
