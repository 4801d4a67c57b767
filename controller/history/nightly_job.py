"""The parts of ``edgebench nightly`` around the judging (:mod:`controller.history.nightly`): the lock that
keeps two nightlies of one reports folder apart, the log file, progress as plain log lines, the
confirming re-measure of suspects, and the report."""

from __future__ import annotations

from typing import Any, Callable

from controller.fleet.view import log_progress

LOCK_NAME = ".nightly.lock"
LOG_NAME = "nightly.log"


def remeasure_step(plan: tuple, store: Any) -> Callable[[list[tuple[str, str, str, int]]], str]:
    """The re-measure step of the nightly whose fleet run is ``store`` (``plan``: its devices, models and
    run options): a function that measures the given (device, model, variant, threads) jobs again - with
    each one's fp32 sibling - on their devices only, into ``<run>/remeasure/``, and returns that folder."""
    import dataclasses
    import logging

    from controller.fleet.run import run_fleet
    from controller.fleet.store import RunStore, now_iso

    devices, models, options = plan
    log = logging.getLogger("controller.nightly")

    def remeasure(keys: list[tuple[str, str, str, int]]) -> str:
        wanted: dict[tuple[str, int], set[tuple[str, str]]] = {}
        for device, model, variant, threads in keys:
            # the fp32 sibling too: drift (cosine to fp32) is computed against it on the same device
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
                      log_progress("controller.nightly.progress"))
        target.save_run_info(finished=now_iso())
        return target.root

    return remeasure


def write_nightly_report(run_dir: str, baseline: str | None, out_dir: str, store_url: str | None) -> list[str]:
    """The run's report (html, md, csv) with ``baseline``; a report that cannot be written is a warning
    (regressions.json/.md are written already and the exit code stands). Returns the paths written."""
    import logging

    from controller.errors import EdgebenchError
    from controller.history.report import write_report

    try:
        return [str(p) for p in write_report(run_dir, baseline=baseline, out_dir=out_dir, store_url=store_url)]
    except EdgebenchError as exc:  # regressions.json/.md are written already; the exit code stands
        logging.getLogger("controller.nightly").warning("report not written: %s", exc)
        return []


def log_to_file(path: str):
    """Append INFO+ log lines with timestamps to ``path``; on stderr, INFO lines show too when stderr is
    not a terminal (cron, systemd: plain lines instead of a live board)."""
    import logging
    import sys

    root = logging.getLogger()
    level = root.level
    for handler in root.handlers:
        handler.setLevel(min(level, logging.INFO) if not sys.stderr.isatty() else level)
    root.setLevel(min(level, logging.INFO))
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    return handler


def nightly_lock(out_dir: str, wait: float):
    """The per-reports-folder lock (flock: freed by the kernel when its holder dies, so a killed nightly
    never blocks the next). Raises NightlyBusyError (exit 3) when another nightly holds it."""
    import contextlib
    import os

    from agent.errors import BusyError
    from agent.lock import DeviceLock
    from controller.errors import NightlyBusyError

    path = os.path.join(out_dir, LOCK_NAME)
    lock = DeviceLock(path, wait)
    try:
        lock.acquire()
    except BusyError:
        holder = _read(path)
        raise NightlyBusyError(f"another nightly (pid {holder or '?'}) is running on {os.path.abspath(out_dir)} "
                               f"(lock {path}); this one did not start. Raise --wait-lock to wait for it") from None

    @contextlib.contextmanager
    def held():
        try:
            yield lock
        finally:
            lock.release()

    return held()


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return ""
