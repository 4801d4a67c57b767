"""A device's preparation between the probe and the batch, in as few round trips as the protocol allows
(docs/internals.md, "The lean round trip"): ``agent info`` from the controller's cache when its key
matches (:mod:`controller.fleet.info_cache`), the compatibility preflight, the free-space check, and at
most one stage command that pushes what is missing (agent, models, eval sets, --inputs) with ``agent
info`` in the same command when it was not cached."""

from __future__ import annotations

import os
import posixpath
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Callable

from agent.modelfile import sha256_of
from controller.errors import DeviceError, InputError
from controller.fleet.device_scripts import provisional_runtime
from controller.fleet.info_cache import cache_key
from controller.fleet.models import ModelRef, model_info
from controller.fleet.session import pick_runtime

if TYPE_CHECKING:
    from controller.fleet.device_run import DeviceRun

#: model index -> (None, None) when the device's runtime can load it, else (reason, kind) to skip it with
Verdicts = dict[int, tuple["str | None", "str | None"]]
File = tuple[str, str, str]  #: (local path, sha256, path on the device)


def prepare(run: DeviceRun, clock: Callable[[str], AbstractContextManager]) -> tuple[dict, str, str, Verdicts]:
    """Everything between the probe and the batch: the device's info (from the controller's cache when
    its key matches, else ``agent info`` in the same command as the push), the preflight, and one
    stage of the agent and the missing models. Returns (info, runtime, version, preflight verdicts).

    On a first run the preflight uses the runtime version the probe read from package metadata; when
    ``info`` then picks another runtime (the first one does not import), the preflight runs again and
    what it newly needs is staged in one more round trip."""
    local_agent, agent_sha, remote_agent = run.agent_file()
    run.agent = remote_agent
    key = cache_key(run.device, agent_sha, run.device.runtime, run.probed.get("facts") or {})
    info = run.info_cache.load(key)
    run._set(info_cached=info is not None)
    guess = pick_runtime(run.device, info) if info is not None else provisional_runtime(
        run.device, run.probed.get("facts") or {})
    pushed: set = set()
    while True:
        with clock("preflight"):
            verdicts = preflight(run.models, *guess) if guess else {}
            wanted = wanted_files(run, verdicts, (local_agent, agent_sha, remote_agent))
            missing = [f for f in wanted if f[2] not in pushed and not run.present(f[2])]
        if not missing and info is not None:
            break
        check_space(run, missing)
        run._set(state="pushing" if missing else "preflight", detail=f"{len(missing)} file(s)" if missing
                  else "info")
        with clock("stage"):
            staged = run.stage(missing, info_runtime=run.device.runtime, with_info=info is None)
        pushed.update(f[2] for f in missing)
        if info is None:
            info = staged
            pick_runtime(run.device, info)  # raises for no usable runtime: nothing to cache
            run.info_cache.save(key, info)
        if guess == pick_runtime(run.device, info):
            break
        guess = pick_runtime(run.device, info)
    return info, guess[0], guess[1], verdicts

def wanted_files(run: DeviceRun, verdicts: Verdicts, agent: File) -> list[File]:
    """(local, sha256, remote) of every file the runnable models need on the device, agent first."""
    wanted: dict[str, File] = {agent[1]: agent}
    runnable = [run.models[i] for i, (reason, _) in sorted(verdicts.items()) if reason is None]
    for model in runnable:
        wanted[model.sha256] = (model.path, model.sha256, run._model_path(model))
    for local, digest in run._eval_files(runnable).values():
        wanted[digest] = (local, digest, posixpath.join(run.workdir, "data", f"{digest}.npz"))
    if run.options.job.inputs:
        local = run.options.job.inputs
        wanted[sha256_of(local)] = (local, sha256_of(local), run._inputs_remote())
    return list(wanted.values())


def preflight(models: list[ModelRef], runtime: str, version: str) -> Verdicts:
    """index (into ``models``) -> (None, None) for a model this device's runtime can load, else
    (the reason, its kind) to record it as skipped with."""
    from controller.model import compat

    verdicts: Verdicts = {}
    for index, model in enumerate(models):
        try:
            verdict = compat.check_info(model_info(model.path, model.sha256), runtime, version)
        except InputError as exc:  # not a model / truncated: skip it, run the others
            verdicts[index] = (str(exc), "bad_model")
            continue
        verdicts[index] = (None, None) if verdict.ok else (
            f"{runtime} {version} cannot load it: " + "; ".join(verdict.reasons), "incompatible")
    return verdicts


def check_space(run: DeviceRun, missing: list[File]) -> None:
    """Refuse to push what the workdir's free space (read by the probe) cannot hold twice over (a temp
    copy is verified before its rename). Raises DeviceError kind "disk_full"."""
    if not missing:
        return
    need_kb = sum(os.path.getsize(f[0]) for f in missing) // 1024 + 1
    free_kb = run.probed.get("disk_free_kb")
    if isinstance(free_kb, (int, float)) and free_kb < need_kb * 2:
        raise DeviceError(run.device.name, f"disk full: {free_kb} KiB free in {run.workdir}, the files "
                          f"need {need_kb} KiB (twice that while verifying); free space or set another "
                          "workdir", kind="disk_full")
