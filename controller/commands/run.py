"""``edgebench run MODELS...``: measure models on the selected devices and write a run folder."""

from __future__ import annotations

import argparse

from agent.job import JobSpec
from controller import defaults
from controller.commands.selection import add_selection_arguments


def _threads(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads takes a comma-separated list of integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--threads needs integers >= 1, got {text!r}")
    return values


def add_run_arguments(p: argparse.ArgumentParser, models_nargs: str = "+") -> None:
    """The options of a fleet run (shared by ``run`` and ``nightly``, whose models may come from its
    --config: ``models_nargs="*"``)."""
    p.add_argument("models", nargs=models_nargs, default=[] if models_nargs == "*" else None, metavar="MODEL",
                   help=".tflite file or folder with manifest.json")
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
    p.add_argument("--job-timeout", type=float, default=defaults.JOB_TIMEOUT,
                   help=f"deadline of one job on the device, seconds (default {defaults.JOB_TIMEOUT:g})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of the random inputs (default {d.seed})")
    p.add_argument("--eval", metavar="DATA.npz", help="eval data (x, optional labels y): outputs are saved "
                   "and accuracy computed (default: the model folder's own eval set, if its manifest has one)")
    p.add_argument("--no-eval", action="store_true", help="do not compute accuracy")
    p.add_argument("--top1-drop", type=float, default=defaults.TOP1_DROP,
                   help=f"flag drift: top-1 more than this many points below fp32 (default {defaults.TOP1_DROP:g})")
    p.add_argument("--min-cosine", type=float, default=defaults.MIN_COSINE,
                   help="flag drift: worst output's mean cosine similarity to fp32 below this "
                   f"(default {defaults.MIN_COSINE:g})")
    p.add_argument("--parallel", type=int, default=defaults.PARALLEL_DEVICES,
                   help=f"devices worked on at once (default {defaults.PARALLEL_DEVICES})")
    p.add_argument("--out", default=defaults.OUT_DIR, help=f"where run folders go (default {defaults.OUT_DIR}/)")
    p.add_argument("--lock-timeout", type=float, help="seconds to wait for a busy device's lock "
                   f"(default: the device's lock_timeout, {defaults.LOCK_TIMEOUT:g})")
    p.add_argument("--shuffle-seed", type=int, help="shuffle the job order on each device with this seed")
    p.add_argument("--no-sync-start", action="store_true", help="let each device start measuring as soon as it "
                   "is prepared (default: all start together once every device is prepared)")
    p.add_argument("--agent", metavar="PYZ", help="agent zipapp to push (default: built from this tree)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run models on the fleet (devices in parallel) and write a run folder",
        description="Run MODELS (.tflite files, or folders with a manifest.json: all their variants) on the "
        "selected devices. Per device: compatibility preflight, push the agent and the models (only what is "
        "missing), run the jobs one at a time under the device lock, fetch the results, score accuracy "
        "against fp32. Writes <out>/<run-id>/ (run.json, results.parquet, samples.parquet, outputs/) and "
        "prints the table. Exit 0 all ok, 1 some jobs or devices failed, 3 no device reachable, "
        "6 a variant drifted from fp32.",
    )
    add_run_arguments(p, models_nargs="*")  # none with --resume; run() checks
    p.add_argument("--resume", metavar="RUN_DIR", help="finish a run whose controller was killed: fetch what "
                   "finished on its devices, mark the rest not_run, rebuild the tables (nothing is measured "
                   "again); give the --devices/--inventory the run used, no MODEL")
    p.add_argument("--profile", action="store_true", help="then time each op of every model that ran ok, on "
                   "each device (as edgebench profile): <run>/profiles/<device>/<job-id>-profile.json")
    p.set_defaults(func=run)


def options_from(args: argparse.Namespace):
    """The :class:`~controller.fleet.run.RunOptions` the parsed run arguments ask for (validated there).
    Raises UsageError / InputError."""
    import os

    from controller.errors import UsageError
    from controller.fleet.agent_build import agent_zipapp
    from controller.fleet.models import check_eval_data
    from controller.fleet.options import RunOptions
    from controller.variants.scoring import Thresholds

    if args.eval:
        check_eval_data(args.eval)
    job = JobSpec(model="", runs=args.runs, warmup=args.warmup, warmup_min_seconds=args.warmup_min_seconds,
                  min_seconds=args.min_seconds, max_seconds=args.max_seconds, timeout=args.job_timeout,
                  seed=args.seed)
    try:
        return RunOptions(
            job=job, threads=args.threads, eval_data=os.path.abspath(args.eval) if args.eval else None,
            use_manifest_eval=not args.no_eval, thresholds=Thresholds(args.top1_drop, args.min_cosine),
            parallel=args.parallel, out_dir=args.out, shuffle_seed=args.shuffle_seed,
            lock_timeout=args.lock_timeout, agent_pyz=args.agent or agent_zipapp(), sync_start=not args.no_sync_start,
        )
    except UsageError as exc:  # name the option the user typed, not the JobSpec field
        raise UsageError(_as_options(str(exc))) from exc


#: JobSpec / RunOptions field -> the run option that sets it
OPTION_OF = {"runs": "--runs", "warmup_min_seconds": "--warmup-min-seconds", "warmup": "--warmup",
             "min_seconds": "--min-seconds", "max_seconds": "--max-seconds", "timeout": "--job-timeout",
             "seed": "--seed", "threads": "--threads", "parallel": "--parallel", "lock timeout": "--lock-timeout"}


def _as_options(message: str) -> str:
    import re

    for field_name, option in OPTION_OF.items():
        message = re.sub(rf"(?<![\w-]){re.escape(field_name)}(?= must)", option, message)
    return message


def run(args: argparse.Namespace) -> int:
    """Run the fleet; return the exit code (see ``edgebench --help``)."""
    from controller.commands.selection import selected_devices
    from controller.errors import UsageError
    from controller.fleet.models import collect_models

    if args.resume:
        if args.models:
            raise UsageError("--resume RUN_DIR finishes an existing run: give no MODEL with it")
        return resume(args)
    if not args.models:
        raise UsageError("give at least one MODEL (a .tflite file or a folder with manifest.json), or --resume RUN_DIR")
    inventory, devices = selected_devices(args)
    models = collect_models(args.models)
    options = options_from(args)
    after = None
    if args.profile:
        from controller.model.op_cut import schema_module

        schema_module()  # no schema module here: ToolError (exit 4) before anything is measured
        after = _profiler(args, options, devices, models)
    store, result = run_and_show(devices, models, options, inventory.path, args.json, after)
    return exit_code(result, store.run_info.get("profiles"))


def resume(args: argparse.Namespace) -> int:
    """``run --resume RUN_DIR`` (:func:`controller.fleet.resume.resume_run`): print what was recovered and
    the table; return the run's exit code (0 all jobs ok, 1 partial, 3 no device reachable)."""
    import json
    import sys

    from controller.commands.selection import selected_devices
    from controller.console import console
    from controller.fleet.agent_build import agent_zipapp
    from controller.fleet.resume import resume_run
    from controller.fleet.store import load_results
    from controller.fleet.view import results_table

    _, devices = selected_devices(args)
    store, group = resume_run(args.resume, devices, args.agent or agent_zipapp())
    frame = load_results(store.root)
    jobs_failed = bool(len(frame)) and bool((frame["status"] != "ok").any())
    code = int(group.exit_code(jobs_failed=jobs_failed))
    if args.json:
        doc = {"run_id": store.run_id, "run_dir": store.root, "exit_code": code,
               "devices": {n: {"ok": o.ok, "reason": o.reason, "kind": o.kind, "value": o.value}
                           for n, o in group.outcomes.items()},
               "results": json.loads(frame.to_json(orient="records"))}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return code
    err = console(stderr=True)
    for name, outcome in group.outcomes.items():
        said = (f"{outcome.value['fetched']} result(s) fetched, {outcome.value['missing']} job(s) not run"
                if outcome.ok else f"[red]failed[/] ({outcome.kind}): {outcome.reason}")
        err.print(f"{name}: {said}", soft_wrap=True)
    console().print(results_table(frame))
    console().print(f"run folder: {store.root}", soft_wrap=True, highlight=False)
    return code


def exit_code(result, profiles: dict | None) -> int:
    """The fleet's exit code; a profile that failed (``run --profile``) makes an otherwise clean run 1."""
    from controller.errors import ExitCode

    code = result.exit_code()
    if code == ExitCode.OK and any(p["failed"] for p in (profiles or {}).values()):
        code = ExitCode.PARTIAL
    return int(code)


def _profiler(args: argparse.Namespace, options, devices, models):
    """``--profile``: the step after the fleet run that profiles every job that was ok (see
    :func:`controller.fleet.profile.profile_run`), records ``profiles`` in run.json and returns them."""
    from controller.fleet.profile import ProfileOptions, profile_run

    profile_options = ProfileOptions(runs=options.job.runs, min_seconds=options.job.min_seconds,
                                     timeout=options.job.timeout, inputs=options.eval_data,
                                     lock_timeout=options.lock_timeout)

    def after(store, result) -> dict:
        outcomes = profile_run(result, devices, models, options.threads, store, profile_options,
                               options.agent_pyz, options.parallel)
        store.save_run_info(profiles={n: _without_summaries(o) for n, o in outcomes.items()})
        return outcomes

    return after


def _without_summaries(outcome: dict) -> dict:
    return {k: v for k, v in outcome.items() if k != "summaries"}


def run_and_show(devices, models, options, inventory_path: str, as_json: bool, after=None):
    """Run with the live progress board on stderr (plain when not a terminal), then ``after(store,
    result)`` (``run --profile``: device -> profile outcome) unless interrupted, then print the results
    table (or the JSON document). Returns (store, FleetResult)."""
    import json
    import sys

    from rich.live import Live

    from controller.console import console
    from controller.fleet.run import execute
    from controller.fleet.view import FleetBoard, results_table

    board = FleetBoard()
    err = console(stderr=True)
    if as_json:
        store, result = execute(devices, models, options, inventory_path, board.update)
    else:
        with Live(board, console=err, refresh_per_second=4, transient=False):
            store, result = execute(devices, models, options, inventory_path, board.update)
        if not err.is_terminal:
            err.print()  # rich leaves the last render of a non-terminal Live without a newline
    profiles = after(store, result) if after is not None and not result.interrupted else None
    code = exit_code(result, profiles)
    if profiles is not None:
        store.save_run_info(exit_code=code)
    if as_json:
        if result.interrupted:
            err.print(f"interrupted: the results that completed are kept in {store.root}", soft_wrap=True)
        doc = {"run_id": store.run_id, "run_dir": store.root, "exit_code": code,
               "devices": {n: s.to_dict() for n, s in result.devices.items()},
               "results": json.loads(result.results.to_json(orient="records"))}
        if profiles is not None:
            doc["profiles"] = {n: _without_summaries(o) for n, o in profiles.items()}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return store, result
    if result.interrupted:
        err.print(f"interrupted: the results that completed are kept in {store.root}", soft_wrap=True)
    console().print(results_table(result.results))
    for name, status in result.failed.items():
        err.print(f"[red]device {name} failed[/] ({status.kind}): {status.reason}", soft_wrap=True)
    if result.drifted:
        err.print(f"[yellow]drift flagged[/] (outputs vs fp32 past --top1-drop / --min-cosine): "
                  f"{', '.join(result.drifted)}", soft_wrap=True)
    if profiles is not None:
        from controller.fleet.profile_view import brief

        for name, outcome in profiles.items():
            if outcome["reason"]:
                err.print(f"[red]profile on {name} failed[/] ({outcome['kind']}): {outcome['reason']}", soft_wrap=True)
            for summary in outcome["summaries"]:
                console().print(f"profile {name}: {brief(summary)}", soft_wrap=True, highlight=False)
    console().print(f"run folder: {store.root}", soft_wrap=True, highlight=False)
    return store, result
