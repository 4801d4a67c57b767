"""``edgebench run MODELS...``: measure models on the selected devices and write a run folder."""

from __future__ import annotations

import argparse

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
    p.add_argument("--profile", action="store_true", help="also time each op of every model that ran ok, on "
                   "each device (edgebench profile): <run>/profiles/<device>/<job-id>-profile.json")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the fleet; return the exit code (0 all ok, 1 partial, 3 no device reachable)."""
    import json
    import os
    import sys

    from rich.live import Live

    from controller import __version__
    from controller.fleet import (
        RunOptions,
        agent_zipapp,
        check_eval_data,
        collect_models,
        run_fleet,
        score_outputs,
    )
    from controller.inventory import selected_devices
    from controller.profile_report import brief
    from controller.report import FleetBoard, console, results_table
    from controller.store import RunStore, run_info

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
    store = RunStore.create(args.out, run_info(options, inventory.path, devices, models, __version__))
    board = FleetBoard()
    err = console(stderr=True)
    out = console()
    try:
        if args.json:
            result = run_fleet(devices, models, options, store, board.update, score_outputs)
        else:
            with Live(board, console=err, refresh_per_second=4, transient=False):
                result = run_fleet(devices, models, options, store, board.update, score_outputs)
            if not err.is_terminal:
                err.print()  # rich leaves the last render of a non-terminal Live without a newline
    finally:
        store.save_run_info(finished=_now())
    frame = result.results
    code = int(result.exit_code())
    profiles = _profiles(args, options, result, devices, models, store) if args.profile else None
    if profiles and code == 0 and any(p["failed"] for p in profiles.values()):
        code = 1
    store.save_run_info(exit_code=code)
    if args.json:
        doc = {"run_id": store.run_id, "run_dir": store.root, "exit_code": code,
               "devices": {n: s.to_dict() for n, s in result.devices.items()},
               "results": json.loads(frame.to_json(orient="records"))}
        if profiles is not None:
            doc["profiles"] = {n: {k: v for k, v in o.items() if k != "summaries"} for n, o in profiles.items()}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return code
    out.print(results_table(frame))
    for name, status in result.failed.items():
        err.print(f"[red]device {name} failed[/] ({status.kind}): {status.reason}", soft_wrap=True)
    for name, outcome in (profiles or {}).items():
        if outcome["reason"]:
            err.print(f"[red]profile on {name} failed[/]: {outcome['reason']}", soft_wrap=True)
        for summary in outcome["summaries"]:
            out.print(f"profile {name}: {brief(summary)}", soft_wrap=True, highlight=False)
    out.print(f"run folder: {store.root}", soft_wrap=True, highlight=False)
    return code


def _profiles(args: argparse.Namespace, options, result, devices, models, store) -> dict:
    """``--profile``: per-op profiles of every model that ran ok, per device, saved in the run folder and
    recorded in run.json (``profiles``); device -> {"jobs", "failed", "reason", "files", "summaries"}."""
    from controller.profile_session import ProfileOptions, profile_run

    profile_options = ProfileOptions(runs=args.runs, min_seconds=args.min_seconds, timeout=args.job_timeout,
                                     inputs=options.eval_data, lock_timeout=args.lock_timeout)
    outcomes = profile_run(result, devices, models, options.threads, store, profile_options, options.agent_pyz,
                           options.parallel)
    store.save_run_info(profiles={n: {k: v for k, v in o.items() if k != "summaries"} for n, o in outcomes.items()})
    return outcomes


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
