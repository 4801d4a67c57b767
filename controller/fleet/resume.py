"""``edgebench run --resume RUN_DIR``: finish a run whose controller was killed (SIGKILL, power, OOM).

The device documents are safe on the devices (``<workdir>/runs/<run-id>/results/<job>.json``, written
atomically by ``agent batch``) and the documents fetched before the kill are safe in the run folder; what
is missing are the tables and run.json's end. :func:`resume_run`, per device of the run (in parallel,
through :func:`controller.fleet.group.run_group`):

1. connects (the device's entry from the inventory given now),
2. :func:`collect` — ONE remote command that waits for the device lock (so a batch still unwinding has
   finished writing) and returns ``jobs.json`` and every result document of the run,
3. saves each document the run folder does not have yet; every planned job with no document anywhere
   becomes a ``not_run`` row ("the controller was killed before it finished").

Nothing is measured again and nothing twice: a document is keyed by (device, job id). Then the tables are
rebuilt and run.json records ``resumed`` (times) and ``state`` ``finished``. Accuracy columns are not
recomputed (the outputs stay on the devices).

Extension point (the daemon's journal): ``collect(session, run_id, lock_timeout) -> (jobs, docs)`` is the
one place that asks a device what finished; a device running the agent daemon can answer from its
journal instead, with the same return value.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Callable, Sequence
from typing import Any

from controller.errors import DeviceError, InputError
from controller.fleet.group import GroupResult, run_group
from controller.fleet.inventory import Device
from controller.fleet.models import ModelRef
from controller.fleet.part_files import sweep_stale
from controller.fleet.session import DeviceSession
from controller.fleet.store import RunStore, not_run_row, now_iso

KILLED_REASON = "the controller was killed before this job finished (recovered by --resume)"
NOT_SENT_REASON = ("never sent to the device: the controller was killed first, or the preflight skipped it "
                   "(that reason was lost with the controller)")

# Runs on the device: argv = run_dir lock lock_timeout. Waits for the device lock (a batch still
# unwinding), then prints {"jobs": [...] | null, "docs": {id: document}, "busy": bool}.
_COLLECT_SCRIPT = """
import fcntl, json, os, sys, time
run_dir, lock, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
busy = False
fd = None
try:
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    end = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() > end:
                busy = True
                break
            time.sleep(0.2)
except OSError:
    pass
jobs, docs = None, {}
try:
    with open(os.path.join(run_dir, "jobs.json")) as f:
        jobs = json.load(f)
except (OSError, ValueError):
    pass
folder = os.path.join(run_dir, "results")
for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    if name.endswith(".json") and not name.startswith("."):
        try:
            with open(os.path.join(folder, name)) as f:
                docs[name[:-5]] = json.load(f)
        except (OSError, ValueError):
            pass
print(json.dumps({"jobs": jobs, "docs": docs, "busy": busy}))
"""


def open_run(run_dir: str) -> RunStore:
    """The run folder ``run_dir`` as a RunStore, its run.json loaded. Raises InputError when it is not a
    run folder."""
    path = os.path.join(run_dir, "run.json")
    try:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"{run_dir} is not a run folder ({path}: {getattr(exc, 'strerror', None) or exc}); "
                         "pass a folder under reports/") from None
    if not isinstance(info, dict) or "run_id" not in info:
        raise InputError(f"{path} is not a run.json written by edgebench run")
    root = os.path.dirname(os.path.abspath(run_dir.rstrip("/")))
    store = RunStore(root, info["run_id"])
    store.run_info = info
    os.makedirs(store.path("results"), exist_ok=True)
    return store


def collect(session: DeviceSession, run_id: str, lock_timeout: float) -> tuple[list | None, dict[str, dict]]:
    """(the jobs sent to the device's batch or None, {job id: result document}) of run ``run_id`` on the
    session's device, after waiting up to ``lock_timeout`` for its lock. Raises DeviceError."""
    run_dir = posixpath.join(session.workdir, "runs", run_id)
    lock = posixpath.join(session.workdir, "lock")
    result = session.run_python(["-c", _COLLECT_SCRIPT, run_dir, lock, f"{lock_timeout:g}"],
                                timeout=lock_timeout + session.device.command_timeout)
    if not result.ok:
        raise DeviceError(session.device.name, f"collecting the run's results failed: {result.stderr[-500:]}",
                          kind="agent")
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise DeviceError(session.device.name, f"collecting printed no JSON: {result.stdout[-300:]!r}",
                          kind="agent") from exc
    if answer.get("busy"):
        raise DeviceError(session.device.name, "busy: a batch still holds the device lock; try --resume again "
                          "later", kind="busy")
    return answer.get("jobs"), answer.get("docs") or {}


def planned_jobs(store: RunStore, device: Device) -> list[dict[str, Any]]:
    """The jobs the run planned for ``device`` (from run.json's models and threads), each ``{"id",
    "threads", "meta"}`` like the fleet's own planned jobs."""
    from controller.fleet.device_run import job_id

    settings = store.run_info.get("settings") or {}
    threads = tuple(device.threads) or tuple(settings.get("threads") or (1,))
    jobs = []
    for index, entry in enumerate(store.run_info.get("models") or []):
        model = ModelRef(name=entry["name"], variant=entry["variant"], path=entry.get("path", ""),
                         sha256=entry.get("sha256", ""), bytes=entry.get("bytes") or 0)
        for t in threads:
            jobs.append({"id": job_id(index, model, t), "threads": t,
                         "meta": {"model_name": model.name, "variant": model.variant, "sha256": model.sha256,
                                  "bytes": model.bytes}})
    return jobs


def resume_run(run_dir: str, devices: Sequence[Device], agent_pyz: str,
               notify: Callable[[Any], None] | None = None) -> tuple[RunStore, GroupResult]:
    """Recover the run in ``run_dir`` (see the module docstring) from ``devices`` (the run's devices as the
    inventory defines them now). Raises InputError when ``run_dir`` is not a run folder or none of its
    devices is in the inventory."""
    store = open_run(run_dir)
    names = list((store.run_info.get("devices") or {}).keys())
    chosen = [d for d in devices if d.name in names]
    if names and not chosen:
        raise InputError(f"none of the run's devices ({', '.join(names)}) is in the inventory; pass the "
                         "--devices / --inventory the run used")
    have = {(device, doc.get("job", {}).get("id")) for device, doc in store.documents()}

    def work(device: Device) -> dict[str, int]:
        session = DeviceSession(device, agent_pyz, notify)
        try:
            session.open()
            sweep_stale(session)
            collector = collect
            if getattr(device, "daemon", False):  # the agent daemon's journal answers for its device
                from controller.fleet.daemon import collect_journal as collector
            jobs, docs = collector(session, store.run_id, device.lock_timeout)
        finally:
            session.close()
        fetched = 0
        for job_id, doc in docs.items():
            if (device.name, job_id) not in have:
                store.save_result(device.name, doc)
                fetched += 1
        sent = {j["id"]: j for j in jobs or []}
        missing = 0
        for job in planned_jobs(store, device):
            if job["id"] in docs or (device.name, job["id"]) in have:
                continue
            reason = KILLED_REASON if job["id"] in sent else NOT_SENT_REASON
            store.add_not_run(not_run_row(store.run_id, device.name, sent.get(job["id"], job), "not_run", reason,
                                          "interrupted"))
            missing += 1
        store.update_device(device.name, state="recovered", recovered_documents=fetched)
        return {"fetched": fetched, "missing": missing}

    group = run_group(chosen, work, deadline=None, label="resume")
    store.save_run_info(resumed=[*store.run_info.get("resumed", []), now_iso()], state="finished",
                        exit_code=int(group.exit_code()))
    store.write_tables()
    return store, group
