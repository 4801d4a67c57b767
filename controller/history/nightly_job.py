"""The steps of ``edgebench nightly`` around its fleet run: the per-reports-folder lock, the re-measure
step, and judging the finished run (index it, compare, confirm, write regressions.json/.md and the
report). The command (:mod:`controller.commands.nightly`) parses the options, runs the fleet and prints;
what a nightly concludes is :mod:`controller.history.nightly`.

Log lines go to the ``controller.nightly`` logger (the nightly's log file shows them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

from controller.errors import EdgebenchError, ExitCode, NightlyBusyError

LOCK_NAME = ".nightly.lock"
log = logging.getLogger("controller.nightly")


@contextlib.contextmanager
def nightly_lock(out_dir: str, wait: float) -> Iterator[None]:
    """Hold the reports folder's nightly lock (flock: freed by the kernel when its holder dies, so a
    killed nightly never blocks the next), waiting at most ``wait`` seconds. Raises NightlyBusyError
    (exit 3) naming the holder's pid when another nightly holds it."""
    from agent.errors import BusyError
    from agent.lock import DeviceLock

    path = os.path.join(out_dir, LOCK_NAME)
    lock = DeviceLock(path, wait)
    try:
        lock.acquire()
    except BusyError:
        holder = _holder(path)
        raise NightlyBusyError(f"another nightly (pid {holder or '?'}) is running on {os.path.abspath(out_dir)} "
                               f"(lock {path}); this one did not start. Raise --wait-lock to wait for it") from None
    try:
        yield
    finally:
        lock.release()


def _holder(path: str) -> str:
    """The pid the lock holder wrote into the lock file, or "" when it cannot be read (it may be gone)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def remeasurer(devices: list, models: list, options: Any, store: Any,
               progress: Callable[[], Callable] | None = None) -> Callable[[list[tuple[str, str, str, int]]], str]:
    """The re-measure step of :func:`controller.history.nightly.evaluate`: a callable that runs the given
    (device, model, variant, threads) jobs again - with their fp32 sibling, against which drift is
    computed - on their devices only, in ``<run>/remeasure/``, and returns that folder. ``progress()``
    makes the progress callback of each fleet run."""
    from controller.fleet.run import run_fleet
    from controller.fleet.store import RunStore, now_iso

    def remeasure(keys: list[tuple[str, str, str, int]]) -> str:
        wanted: dict[tuple[str, int], set[tuple[str, str]]] = {}
        for device, model, variant, threads in keys:
            wanted.setdefault((device, threads), set()).update({(model, variant), (model, "fp32")})
        groups: dict[tuple[int, tuple], list[str]] = {}
        for (device, threads), names in wanted.items():
            groups.setdefault((threads, tuple(sorted(names))), []).append(device)
        target = RunStore.create(store.root, {"kind": "remeasure", "of": store.run_id, "created": now_iso()},
                                 run_id="remeasure")
        for (threads, names), group in sorted(groups.items()):
            chosen_models = [m for m in models if (m.name, m.variant) in names]
            chosen = [d for d in devices if d.name in group]
            log.info("re-measuring %d model file(s) x %d thread(s) on %s", len(chosen_models), threads,
                     ", ".join(group))
            run_fleet(chosen, chosen_models, dataclasses.replace(options, threads=(threads,)), target,
                      progress() if progress else None)
        target.save_run_info(finished=now_iso())
        return target.root

    return remeasure


@dataclass
class Verdict:
    """What :func:`judge` concluded: the outcome, the nightly's exit code and the files it wrote
    (regressions.json, regressions.md, then the report files)."""

    outcome: Any  #: controller.history.nightly.NightlyOutcome
    exit_code: int
    paths: list[str]


def judge(store: Any, run_code: int, limits: Any, *, out_dir: str, store_url: str | None,
          remeasure: Callable | None, cooldown: float, window: int) -> Verdict | None:
    """Judge the finished nightly run in ``store`` (its fleet exit code ``run_code``): add it to the history
    index (kind nightly; a store that fails is logged and the run folders are read instead), compare it
    with the earlier nightlies of ``out_dir``, re-measure suspects through ``remeasure`` (None: do not)
    after ``cooldown`` seconds, look for change points over ``window`` nights, write regressions.json/.md
    and the report, and record the nightly's exit code in run.json. Returns None when no device was
    reachable (nothing to compare). Raises what :func:`controller.history.nightly.evaluate` raises."""
    from controller.fleet.store import load_run_info
    from controller.history import nightly
    from controller.history.index import index_run
    from controller.history.nightly_runs import nightly_history, nightly_runs, open_history_index, utc

    indexed = index_run(store.root, out_dir, store_url, kind="nightly")
    if indexed["error"]:
        log.warning("nightly %s: %s; reading run folders", store.run_id, indexed["error"])
    if run_code == ExitCode.NO_DEVICE:
        log.error("nightly %s: no device reachable; nothing to compare", store.run_id)
        return None
    index = open_history_index(out_dir, store_url) if not indexed["error"] else None
    try:
        created = utc(load_run_info(store.root)["created"])
        runs = nightly_runs(out_dir, index)
        earlier = [r for r in runs if r.run_id != store.run_id and r.created <= created]  # never overlap
        outcome = nightly.evaluate(store.root, earlier, limits, remeasure, cooldown,
                                   nightly_history(runs, index), window=window)
    finally:
        if index is not None:
            index.close()
    code = int(ExitCode.REGRESSION) if outcome.confirmed_regressions else run_code
    paths = list(nightly.write_outcome(outcome, code))
    store.save_run_info(exit_code=code, nightly={"baseline": outcome.last_comparable,
                                                 "confirmed_regressions": len(outcome.confirmed_regressions),
                                                 "remeasure_dir": outcome.remeasure_dir})
    paths += _report(store.root, outcome.last_comparable, out_dir, store_url)
    for f in outcome.findings:
        log.warning("%s %s %s %s/%s t%d: %s; re-measure: %s", "CONFIRMED" if f.confirmed else "not confirmed",
                    f.verdict, f.device, f.model, f.variant, f.threads, "; ".join(f.reasons), f.remeasure_note)
    log.info("nightly %s: exit %d; %s", store.run_id, code, ", ".join(paths))
    return Verdict(outcome, code, paths)


def _report(run_dir: str, baseline: str | None, out_dir: str, store_url: str | None) -> list[str]:
    """The run's report files; none (with a warning) when the report cannot be written: regressions.json
    and .md are written already and the exit code stands."""
    from controller.history.report import write_report

    try:
        return [str(p) for p in write_report(run_dir, baseline=baseline, out_dir=out_dir, store_url=store_url)]
    except EdgebenchError as exc:
        log.warning("report not written: %s", exc)
        return []
