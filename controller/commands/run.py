"""``edgebench run MODELS...``: measure models on the selected devices and write a run folder."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from agent.job import JobSpec
from controller.errors import UsageError
from controller.inventory import add_selection_arguments


def _threads(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads takes a comma-separated list of integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--threads needs integers >= 1, got {text!r}")
    return values


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Every option of ``run`` except the models and ``--json`` (``nightly`` takes the same)."""
    add_selection_arguments(p)
    p.add_argument("--threads", type=_threads, default=(1,), help="thread counts, e.g. 1,2,4 (default 1)")
    d = JobSpec(model="")  # the agent's measurement defaults
    p.add_argument("--runs", type=int, default=d.runs, help=f"at least this many measured runs (default {d.runs})")
    p.add_argument("--warmup", type=int, default=d.warmup,
                   help=f"at least this many warmup runs (default {d.warmup})")
    p.add_argument("--min-seconds", type=float, default=d.min_seconds,
                   help=f"measure at least this long (default {d.min_seconds:g})")
    p.add_argument("--warmup-min-seconds", type=float, default=d.warmup_min_seconds,
                   help=f"warm up at least this long (default {d.warmup_min_seconds:g})")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds,
                   help=f"cap on the measured time per job (default {d.max_seconds:g})")
    p.add_argument("--job-timeout", type=float, default=300.0, help="deadline of one job on the device")
    p.add_argument("--eval", metavar="DATA.npz", help="eval data (x, optional labels y): outputs are saved "
                   "and accuracy computed (default: the model folder's own eval set, if its manifest has one)")
    p.add_argument("--no-eval", action="store_true", help="do not compute accuracy")
    p.add_argument("--parallel", type=int, default=8, help="devices worked on at once (default 8)")
    p.add_argument("--out", default="reports", help="where run folders go (default reports/)")
    p.add_argument("--lock-timeout", type=float, help="seconds to wait for a busy device's lock "
                   "(default: the device's lock_timeout, 60)")
    p.add_argument("--shuffle-seed", type=int, help="shuffle the job order on each device with this seed")
    p.add_argument("--no-sync-start", action="store_true", help="let each device start measuring as soon as it "
                   "is prepared (default: all start together once every device is prepared)")
    p.add_argument("--agent", metavar="PYZ", help="agent zipapp to push (default: built from this tree)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run models on the fleet (devices in parallel) and write a run folder",
        description="Run MODELS (.tflite files, or folders with a manifest.json: all their variants) on the "
        "selected devices. Per device: compatibility preflight, push the agent and the models (only what is "
        "missing), run the jobs one at a time under the device lock, fetch the results. Writes "
        "<out>/<run-id>/ (run.json, results.parquet, samples.parquet, outputs/) and prints the table.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help=".tflite file or folder with manifest.json")
    add_run_options(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.set_defaults(func=run)


@dataclass
class RunPlan:
    """What a parsed ``run`` command line asks for (``nightly`` reuses it)."""

    inventory: Any
    devices: list
    models: list
    options: Any


def prepare(args: argparse.Namespace) -> RunPlan:
    """Check the run options, load the inventory and the models. Raises UsageError / ConfigError /
    InputError naming what is wrong."""
    import os

    from controller.fleet import RunOptions, agent_zipapp, check_eval_data, collect_models
    from controller.inventory import selected_devices

    if args.runs < 1 or args.warmup < 0 or args.parallel < 1:
        raise UsageError("--runs and --parallel must be >= 1, --warmup >= 0")
    for name in ("min_seconds", "warmup_min_seconds", "max_seconds"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
    if args.job_timeout <= 0:
        raise UsageError("--job-timeout must be > 0")
    inventory, devices = selected_devices(args)
    models = collect_models(args.models)
    if args.eval:
        check_eval_data(args.eval)
    options = RunOptions(
        threads=args.threads, runs=args.runs, warmup=args.warmup, warmup_min_seconds=args.warmup_min_seconds,
        min_seconds=args.min_seconds, max_seconds=args.max_seconds, job_timeout=args.job_timeout,
        eval_data=os.path.abspath(args.eval) if args.eval else None, use_manifest_eval=not args.no_eval,
        parallel=args.parallel, out_dir=args.out, shuffle_seed=args.shuffle_seed,
        lock_timeout=args.lock_timeout, agent_pyz=args.agent or agent_zipapp(), sync_start=not args.no_sync_start,
    )
    return RunPlan(inventory, devices, models, options)


def create_store(plan: RunPlan, out_dir: str, **extra: Any):
    """A new run folder under ``out_dir`` whose run.json describes ``plan`` (plus ``extra`` keys)."""
    from controller import __version__
    from controller.store import RunStore, run_info

    return RunStore.create(out_dir, {**run_info(plan.options, plan.inventory.path, plan.devices, plan.models,
                                                __version__), **extra})


def execute(plan: RunPlan, store, live: bool = True):
    """Run ``plan`` into ``store`` and return the FleetResult. Progress goes to stderr: a live board on a
    terminal (when ``live``), plain log lines otherwise (cron, systemd, pipes)."""
    from rich.live import Live

    from controller.fleet import run_fleet, score_outputs
    from controller.report import FleetBoard, console

    err = console(stderr=True)
    try:
        if live and err.is_terminal:
            board = FleetBoard()
            with Live(board, console=err, refresh_per_second=4, transient=False):
                return run_fleet(plan.devices, plan.models, plan.options, store, board.update, score_outputs)
        return run_fleet(plan.devices, plan.models, plan.options, store, _log_progress(), score_outputs)
    finally:
        store.save_run_info(finished=_now())


def _log_progress():
    """A progress callback that logs one line per device state change (no terminal needed)."""
    import logging

    log = logging.getLogger("controller.run")
    last: dict[str, tuple] = {}

    def notify(status) -> None:
        seen = (status.state, status.detail if status.state != "running" else "")
        if last.get(status.name) != seen:
            last[status.name] = seen
            reason = f" ({status.kind}: {status.reason})" if status.reason else ""
            log.info("%s: %s %s%s", status.name, status.state, status.detail, reason)
    return notify


def run(args: argparse.Namespace) -> int:
    """Run the fleet; return the exit code (0 all ok, 1 partial, 3 no device reachable)."""
    import json
    import sys

    from controller.report import console, results_table

    plan = prepare(args)
    store = create_store(plan, args.out)
    result = execute(plan, store, live=not args.json)
    frame = result.results
    code = int(result.exit_code())
    store.save_run_info(exit_code=code)
    if args.json:
        doc = {"run_id": store.run_id, "run_dir": store.root, "exit_code": code,
               "devices": {n: s.to_dict() for n, s in result.devices.items()},
               "results": json.loads(frame.to_json(orient="records"))}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return code
    err = console(stderr=True)
    out = console()
    out.print(results_table(frame))
    for name, status in result.failed.items():
        err.print(f"[red]device {name} failed[/] ({status.kind}): {status.reason}", soft_wrap=True)
    out.print(f"run folder: {store.root}", soft_wrap=True, highlight=False)
    return code


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
