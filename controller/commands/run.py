"""``edgebench run MODELS...``: measure models on the selected devices and write a run folder."""

from __future__ import annotations

import argparse

from agent.job import JobSpec
from controller.commands.history import add_store_argument
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
    add_store_argument(p)
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
    from controller.history.index import check_store_url
    from controller.inventory import selected_devices
    from controller.report import FleetBoard, console, results_table
    from controller.store import RunStore, run_info

    if args.runs < 1 or args.warmup < 0 or args.parallel < 1:
        raise UsageError("--runs and --parallel must be >= 1, --warmup >= 0")
    for name in ("min_seconds", "warmup_min_seconds", "max_seconds"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
    if args.job_timeout <= 0:
        raise UsageError("--job-timeout must be > 0")
    check_store_url(args.store)
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
    store.save_run_info(exit_code=code)
    indexed = index_run(store.root, args.out, args.store)
    if indexed["error"]:
        err.print(f"[yellow]warning:[/] {indexed['error']}", soft_wrap=True, highlight=False)
    if args.json:
        doc = {"run_id": store.run_id, "run_dir": store.root, "exit_code": code, "history_index": indexed,
               "devices": {n: s.to_dict() for n, s in result.devices.items()},
               "results": json.loads(frame.to_json(orient="records"))}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return code
    out.print(results_table(frame))
    for name, status in result.failed.items():
        err.print(f"[red]device {name} failed[/] ({status.kind}): {status.reason}", soft_wrap=True)
    out.print(f"run folder: {store.root}", soft_wrap=True, highlight=False)
    return code


def index_run(run_dir: str, out_dir: str, store_url: str | None) -> dict:
    """Add the finished run to the history index; ``{"rows": n, "error": None}``, or the reason it could
    not be indexed (the run folder is complete either way; ``edgebench history --rebuild`` adds it)."""
    from controller.errors import EdgebenchError
    from controller.history.index import open_index

    try:
        with open_index(out_dir, store_url) as index:
            return {"rows": index.add_run(run_dir), "error": None}
    except EdgebenchError as exc:
        return {"rows": 0, "error": f"run not added to the history index ({exc}); the run folder is complete: "
                f"`edgebench history --rebuild --out {out_dir}` adds it later"}


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
