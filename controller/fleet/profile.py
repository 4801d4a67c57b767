"""Run per-op profiles: cut the models here, time them on a device (or on this machine).

For each model: :func:`controller.model.op_cut.cut_ops` writes its single-op models (once per model content,
under a cache folder keyed by the model's sha256), a :class:`agent.job.JobSpec` with ``profile`` set
names them, and the agent times them in a fresh worker with a deadline (:mod:`agent.profile`).

- Without a device the job runs on this machine through :func:`agent.runner.run_job`.
- With a device it goes through the fleet's :class:`~controller.fleet.session.DeviceSession` (the same
  connection, agent push, ``info`` and verified pushes as ``edgebench run``): the model and its cuts land
  in the device's content-addressed ``<workdir>/models/<sha256>.tflite`` (what is there is not sent
  again), the jobs run as one ``agent batch`` under the device lock, and the documents come back.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from agent.job import JobSpec
from controller import defaults
from controller.errors import DeviceError, EdgebenchError
from controller.model.op_cut import OpCut, cut_ops


@dataclass
class ProfileOptions:
    """What a profile asks for (one dataclass travels, not a dozen arguments)."""

    runtime: str = "auto"
    xnnpack: bool = True
    inputs: str | None = None  #: .npy/.npz input data (first sample used); default seeded random
    runs: int = JobSpec.runs  #: whole-model timed runs (at least)
    min_seconds: float = JobSpec.min_seconds
    op_runs: int = 20  #: per-op timed runs (at least)
    op_min_seconds: float = 0.05
    timeout: float = JobSpec.timeout  #: deadline of one model's worker (whole model + every op)
    #: where the single-op models are kept, per model sha256 (default: the user's edgebench cache)
    cache: str = field(default_factory=lambda: defaults.cache_folder("op-cuts"))
    lock_timeout: float | None = None  #: device lock wait (default: the device's lock_timeout)

    def plan(self, cuts: list[OpCut], files: list[str | None] | None = None) -> dict[str, Any]:
        """The ``JobSpec.profile`` plan for ``cuts`` (``files``: the device's copies, same order)."""
        files = files or [c.file for c in cuts]
        return {"ops": [c.plan_entry(f) for c, f in zip(cuts, files)], "runs": self.op_runs,
                "min_seconds": self.op_min_seconds}

    def spec(self, model_path: str, job_id: str, threads: int, plan: dict[str, Any], meta: dict[str, Any],
             inputs: str | None) -> JobSpec:
        """The profile job of one model (raises agent UsageError for a bad setting)."""
        spec = JobSpec(model=model_path, id=job_id, threads=threads, runtime=self.runtime,
                       xnnpack=self.xnnpack, runs=self.runs, min_seconds=self.min_seconds, timeout=self.timeout,
                       inputs=inputs, profile=plan, meta=meta)
        spec.validate()
        return spec


def _cutter_hash() -> str:
    """Hash of the cutting code: a changed cutter never serves cuts an older one made."""
    import controller.model.op_cut

    with open(controller.model.op_cut.__file__, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:12]


_CUT_LOCK = threading.Lock()  #: device threads of one run must not cut the same model at once


def cuts_for(model: Any, options: ProfileOptions) -> list[OpCut]:
    """The single-op models of ``model`` (a :class:`~controller.fleet.models.ModelRef`), cut once per content
    (and version of the cutter) into ``options.cache/<cutter>/<sha256>/``. Thread-safe. Raises
    InputError / ToolError as :func:`cut_ops`."""
    with _CUT_LOCK:
        return _cached_cuts(model, options)


def _cached_cuts(model: Any, options: ProfileOptions) -> list[OpCut]:
    folder = os.path.join(options.cache, _cutter_hash(), model.sha256)
    index = os.path.join(folder, "cuts.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as fh:
            cuts = [OpCut(**{**c, "inputs": tuple(c["inputs"])}) for c in json.load(fh)]
        if all(c.file is None or os.path.isfile(c.file) for c in cuts):
            return cuts
    cuts = cut_ops(model.path, folder)
    tmp = f"{index}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump([c.__dict__ for c in cuts], fh)
    os.replace(tmp, index)
    return cuts


def _job_id(position: int, model: Any, threads: int) -> str:
    """The fleet's job id of this model and thread count, with ``-profile``."""
    from controller.fleet.device_run import job_id as fleet_job_id

    return f"{fleet_job_id(position, model, threads)}-profile"


Target = tuple[int, Any, int]  #: (position of the model on the command line, ModelRef, threads)


def profile_local(targets: list[Target], options: ProfileOptions) -> list[dict[str, Any]]:
    """Profile each (position, model, threads) on this machine, a fresh worker each; the documents in
    order."""
    from agent.runner import run_job

    docs = []
    for position, model, threads in targets:
        cuts = cuts_for(model, options)
        meta = {"device": "local", "model_name": model.name, "variant": model.variant, "sha256": model.sha256}
        spec = options.spec(model.path, _job_id(position, model, threads), threads, options.plan(cuts), meta,
                            os.path.abspath(options.inputs) if options.inputs else None)
        docs.append(run_job(spec))
    return docs


def profile_device(device: Any, targets: list[Target], options: ProfileOptions, agent_pyz: str = "",
                   session: Any = None) -> list[dict]:
    """Profile each (position, model, threads) on ``device`` over its transport; the documents in order.
    ``session``: a :class:`DeviceSession` of ``device`` to use (its owner may close it to stop the work);
    default a new one pushing ``agent_pyz``. Raises DeviceError (unreachable, busy, agent ...) as the fleet's session does."""
    from agent.modelfile import sha256_of
    from controller.fleet.models import MODEL_SUFFIX
    from controller.fleet.session import DeviceSession, pick_runtime

    session = session or DeviceSession(device, agent_pyz)
    try:
        session.open(subdirs=("models", "data", "profiles"))
        runtime, _ = pick_runtime(device, session.agent_info(runtime=device.runtime))  # one round trip
        models_dir = posixpath.join(session.workdir, "models")
        pushes: dict[str, tuple[str, str, str]] = {}
        jobs = []
        inputs = None
        if options.inputs:
            digest = sha256_of(options.inputs)
            inputs = posixpath.join(session.workdir, "data", f"{digest}.npz")
            pushes[digest] = (options.inputs, digest, inputs)
        for position, model, threads in targets:
            cuts = cuts_for(model, options)
            remote = {}
            for path, digest in [(model.path, model.sha256)] + [(c.file, c.sha256) for c in cuts if c.file]:
                remote[path] = posixpath.join(models_dir, f"{digest}{MODEL_SUFFIX}")
                pushes[digest] = (path, digest, remote[path])
            plan = options.plan(cuts, [remote.get(c.file) if c.file else None for c in cuts])
            meta = {"device": device.name, "model_name": model.name, "variant": model.variant,
                    "sha256": model.sha256}
            spec = options.spec(remote[model.path], _job_id(position, model, threads), threads, plan, meta,
                                inputs)
            spec.runtime = runtime
            jobs.append(spec.to_dict())
        missing = [f for f in pushes.values() if not session.present(f[2])]  # the probe listed them
        if missing:
            session.push_verified(missing)
        return _batch(session, jobs, options)
    finally:
        session.close()


def profile_one_device(device: Any, targets: list[Target], options: ProfileOptions, agent_pyz: str) -> Any:
    """``edgebench profile --device``: :func:`profile_device` on one device through
    :func:`controller.fleet.group.run_group` (its deadline, Ctrl-C and exit-code rule). Returns the
    GroupResult; the device's outcome value is its list of profile documents. Never raises for a device
    problem."""
    from controller.fleet.group import run_group
    from controller.fleet.session import DeviceSession

    session = DeviceSession(device, agent_pyz)
    return run_group([device], lambda d: profile_device(d, targets, options, session=session),
                     on_interrupt=session.close, label="profile")


def profile_run(fleet: Any, devices: list[Any], models: list[Any], threads: tuple[int, ...], store: Any,
                options: ProfileOptions, agent_pyz: str, parallel: int) -> dict[str, dict[str, Any]]:
    """``edgebench run --profile``: after the fleet run (``fleet``: its FleetResult), on every device that
    did not fail, profile each model at each thread count whose job was ok there, through
    :func:`controller.fleet.group.run_group`; save the documents to
    ``<run>/profiles/<device>/<job-id>-profile.json``. Returns device -> {"jobs", "failed", "reason",
    "kind", "files" (relative to the run folder), "summaries"
    (:func:`controller.fleet.profile_view.summarize` of each)}; never raises for a device problem (nor
    after Ctrl-C: the devices not finished then say ``interrupted``)."""
    from controller.fleet.device_run import job_id as fleet_job_id
    from controller.fleet.group import run_group
    from controller.fleet.profile_view import summarize
    from controller.fleet.session import DeviceSession
    from controller.fleet.store import write_json

    frame = fleet.results
    ok = set()
    if frame is not None and len(frame):
        for row in frame[frame["status"] == "ok"][["device", "job_id"]].itertuples(index=False):
            ok.add((row.device, row.job_id))
    done = [d for d in devices if not fleet.devices[d.name].failed]
    wanted = {d.name: [(i, m, t) for i, m in enumerate(models) for t in (d.threads or threads)
                       if (d.name, fleet_job_id(i, m, t)) in ok] for d in done}
    sessions = {d.name: DeviceSession(d, agent_pyz) for d in done}

    def work(device: Any) -> dict[str, Any]:
        outcome: dict[str, Any] = {"jobs": len(wanted[device.name]), "failed": 0, "reason": None, "kind": None,
                                   "files": [], "summaries": []}
        if not wanted[device.name]:
            return outcome
        try:
            docs = profile_device(device, wanted[device.name], options, agent_pyz, sessions[device.name])
        except DeviceError:
            raise
        except EdgebenchError as exc:  # a model that cannot be cut: this device's profile failed with it
            raise DeviceError(device.name, str(exc), kind="profile") from exc
        folder = store.device_dir("profiles", device.name)
        for doc in docs:
            path = os.path.join(folder, f"{doc['job']['id']}.json")
            write_json(path, doc)
            outcome["files"].append(os.path.relpath(path, store.root))
            outcome["failed"] += int(doc.get("status") != "ok")
            outcome["summaries"].append(summarize(doc))
        return outcome

    def stop_all() -> None:  # Ctrl-C: local commands killed, SSH links closed
        for session in sessions.values():
            session.close()

    group = run_group(done, work, parallel=parallel, on_interrupt=stop_all, label="profile")
    outcomes = {}
    for name, outcome in group.outcomes.items():
        if outcome.ok:
            outcomes[name] = outcome.value
        else:
            outcomes[name] = {"jobs": len(wanted[name]), "failed": len(wanted[name]), "reason": outcome.reason,
                              "kind": outcome.kind, "files": [], "summaries": []}
    return outcomes


def _batch(session: Any, jobs: list[dict], options: ProfileOptions) -> list[dict]:
    """Run ``jobs`` as one ``agent batch`` under the device lock (:meth:`DeviceSession.run_batch`) and
    return their documents, in the order of ``jobs``: from the ``done`` events, or downloaded when an
    event did not carry one. Raises DeviceError when the batch fails."""
    from controller.fleet.session import agent_event

    out = posixpath.join(session.workdir, "profiles", session.token, "results")
    lock_timeout = session.device.lock_timeout if options.lock_timeout is None else options.lock_timeout
    docs: dict[str, dict] = {}

    def on_line(line: str) -> None:
        event = agent_event(line) or {}
        if event.get("event") == "done" and isinstance(event.get("document"), dict):
            docs[str(event.get("id"))] = event["document"]

    session.run_batch(jobs, out, lock_timeout, options.timeout + 30, on_line)
    missing = [job["id"] for job in jobs if job["id"] not in docs]
    if missing:
        with tempfile.TemporaryDirectory(prefix="edgebench-profile-") as tmp:
            for job_id in missing:
                local = os.path.join(tmp, f"{job_id}.json")
                session.t.get(posixpath.join(out, f"{job_id}.json"), local)
                with open(local, encoding="utf-8") as fh:
                    docs[job_id] = json.load(fh)
    return [docs[job["id"]] for job in jobs]


def after_run(run_options: Any, devices: list[Any], models: list[Any]) -> Callable[[Any, Any], dict[str, dict]]:
    """``run --profile``: the step after the fleet run, ``after(store, fleet_result)``, that profiles every
    job that was ok (:func:`profile_run`, with the run's runs, seconds, timeout, eval inputs and lock
    timeout), records ``profiles`` (without the summaries) in run.json and returns the outcomes."""
    options = ProfileOptions(runs=run_options.job.runs, min_seconds=run_options.job.min_seconds,
                             timeout=run_options.job.timeout, inputs=run_options.eval_data,
                             lock_timeout=run_options.lock_timeout)

    def after(store: Any, result: Any) -> dict[str, dict]:
        outcomes = profile_run(result, devices, models, run_options.threads, store, options,
                               run_options.agent_pyz, run_options.parallel)
        store.save_run_info(profiles={n: without_summaries(o) for n, o in outcomes.items()})
        return outcomes

    return after


def without_summaries(outcome: dict[str, Any]) -> dict[str, Any]:
    """A :func:`profile_run` outcome as run.json and ``run --json`` keep it (the summaries are for the
    terminal)."""
    return {k: v for k, v in outcome.items() if k != "summaries"}


def run_exit_code(result: Any, profiles: dict[str, dict] | None) -> int:
    """The exit code of ``run`` (``result``: the FleetResult): the fleet's, except that a profile that
    failed (``run --profile``) makes an otherwise clean run PARTIAL."""
    from controller.errors import ExitCode

    code = result.exit_code()
    if code == ExitCode.OK and any(p["failed"] for p in (profiles or {}).values()):
        code = ExitCode.PARTIAL
    return int(code)
