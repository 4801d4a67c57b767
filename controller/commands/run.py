"""``edgebench run MODELS...``: measure models on the selected devices and write a run folder."""

from __future__ import annotations

import argparse

from agent.job import JobSpec
from agent.measure_options import add_measurement_options
from controller import defaults
from controller.commands.history import add_store_argument
from controller.commands.selection import add_selection_arguments


def _threads(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads takes a comma-separated list of integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--threads needs integers >= 1, got {text!r}")
    return values


def _xnnpack(text: str) -> tuple[bool, ...]:
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    if not words or any(w not in ("on", "off") for w in words):
        raise argparse.ArgumentTypeError(f"--xnnpack takes on, off or on,off, got {text!r}")
    return tuple(dict.fromkeys(w == "on" for w in words))


def _positive_list(option: str):
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(t) for t in text.split(",") if t.strip())
        except ValueError:
            values = ()
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"{option} takes a comma-separated list of integers >= 1, got {text!r}")
        return values
    return parse


def add_run_arguments(p: argparse.ArgumentParser, models_nargs: str = "+", job_cooldown: bool = True) -> None:
    """The options of a fleet run (shared by ``run`` and ``nightly``, whose models may come from its
    --config: ``models_nargs="*"``, and whose ``--cooldown`` is its own: ``job_cooldown=False``; the run's
    pause between jobs is ``args.job_cooldown``). The measurement options (--runs, --warmup, seconds,
    --seed, --repeat, --run-delay, --cpus, --delegate, --inputs, --input-shape) are the agent's own
    (:func:`agent.measure_options.add_measurement_options`), with the JobSpec defaults."""
    p.add_argument("models", nargs=models_nargs, default=[] if models_nargs == "*" else None, metavar="MODEL",
                   help=".tflite file or folder with manifest.json")
    add_selection_arguments(p)
    p.add_argument("--threads", type=_threads, default=(1,), help="thread counts, e.g. 1,2,4 (default 1)")
    add_measurement_options(p, cpus_note="; a device's own cpus: key wins")
    p.add_argument("--job-timeout", type=float, default=defaults.JOB_TIMEOUT,
                   help=f"deadline of one job on the device, seconds (default {defaults.JOB_TIMEOUT:g})")
    if job_cooldown:
        p.add_argument("--cooldown", dest="job_cooldown", type=float, default=JobSpec.cooldown,
                       help="pause between jobs and between repeats on a device, seconds "
                       f"(default {JobSpec.cooldown:g})")
    p.add_argument("--xnnpack", type=_xnnpack, default=(JobSpec.xnnpack,), metavar="on,off",
                   help="XNNPACK delegate on, off, or both as a sweep like --threads (default on)")
    p.add_argument("--batch-sizes", type=_positive_list("--batch-sizes"), default=(), metavar="1,8,32",
                   help="sweep these batch sizes over models whose inputs have a dynamic first dimension")
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
    add_store_argument(p)
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
    Raises UsageError / InputError naming the option."""
    import os

    from controller.errors import UsageError
    from controller.fleet.agent_build import agent_zipapp
    from controller.fleet.models import check_eval_data
    from controller.fleet.options import RunOptions, job_template
    from controller.variants.scoring import Thresholds

    if args.eval:
        check_eval_data(args.eval)
    job = job_template(delegate=args.delegate, input_shapes=args.input_shape, inputs=args.inputs,
                       runs=args.runs, warmup=args.warmup, warmup_min_seconds=args.warmup_min_seconds,
                       min_seconds=args.min_seconds, max_seconds=args.max_seconds, timeout=args.job_timeout,
                       seed=args.seed, cpus=args.cpus, repeat=args.repeat,
                       cooldown=getattr(args, "job_cooldown", JobSpec.cooldown), run_delay=args.run_delay,
                       xnnpack=args.xnnpack[0])
    try:
        return RunOptions(
            job=job, threads=args.threads, xnnpack=args.xnnpack, batch_sizes=args.batch_sizes,
            eval_data=os.path.abspath(args.eval) if args.eval else None,
            use_manifest_eval=not args.no_eval, thresholds=Thresholds(args.top1_drop, args.min_cosine),
            parallel=args.parallel, out_dir=args.out, shuffle_seed=args.shuffle_seed,
            lock_timeout=args.lock_timeout, agent_pyz=args.agent or agent_zipapp(), sync_start=not args.no_sync_start,
        )
    except UsageError as exc:  # name the option the user typed, not the JobSpec field
        raise UsageError(_as_options(str(exc))) from exc


#: JobSpec / RunOptions field -> the run option that sets it
OPTION_OF = {"runs": "--runs", "warmup_min_seconds": "--warmup-min-seconds", "warmup": "--warmup",
             "min_seconds": "--min-seconds", "max_seconds": "--max-seconds", "timeout": "--job-timeout",
             "seed": "--seed", "threads": "--threads", "parallel": "--parallel", "lock timeout": "--lock-timeout",
             "cpus": "--cpus", "repeat": "--repeat", "cooldown": "--cooldown", "run_delay": "--run-delay",
             "batch sizes": "--batch-sizes", "inputs file": "--inputs"}


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
    from controller.fleet.sweep import check_input_shapes
    from controller.history.index import check_store_url

    if args.resume:
        if args.models:
            raise UsageError("--resume RUN_DIR finishes an existing run: give no MODEL with it")
        return resume(args)
    if not args.models:
        raise UsageError("give at least one MODEL (a .tflite file or a folder with manifest.json), or --resume RUN_DIR")
    check_store_url(args.store)
    inventory, devices = selected_devices(args)
    models = collect_models(args.models)
    options = options_from(args)
    check_input_shapes(options.job.input_shapes, models)
    after = None
    if args.profile:
        from controller.fleet.profile import after_run
        from controller.model.op_cut import schema_module

        schema_module()  # no schema module here: ToolError (exit 4) before anything is measured
        after = after_run(options, devices, models)
    return run_and_show(devices, models, options, inventory.path, args.json, after, store_url=args.store)


def run_and_show(devices, models, options, inventory_path: str, as_json: bool, after=None,
                 store_url: str | None = None) -> int:
    """Run with the live progress board on stderr (none with ``as_json``), then ``after(store, result)``
    (``run --profile``: device -> profile outcome) unless interrupted, add the run to the history index
    (``store_url``: see :func:`controller.history.index.open_index`), then print the results table (or
    the JSON document). Returns the exit code."""
    import json
    import sys

    from controller.console import console
    from controller.fleet.profile import run_exit_code, without_summaries
    from controller.fleet.view import execute_with_board, results_table
    from controller.history.index import index_run

    err = console(stderr=True)
    store, result = execute_with_board(devices, models, options, inventory_path, live=not as_json)
    profiles = after(store, result) if after is not None and not result.interrupted else None
    code = run_exit_code(result, profiles)
    if profiles is not None:
        store.save_run_info(exit_code=code)
    indexed = index_run(store.root, options.out_dir, store_url)
    if indexed["error"]:
        err.print(f"[yellow]warning:[/] {indexed['error']}", soft_wrap=True, highlight=False)
    if result.interrupted:
        err.print(f"interrupted: the results that completed are kept in {store.root}", soft_wrap=True)
    if as_json:
        doc = {"run_id": store.run_id, "run_dir": store.root, "exit_code": code, "history_index": indexed,
               "devices": {n: s.to_dict() for n, s in result.devices.items()},
               "results": json.loads(result.results.to_json(orient="records"))}
        if profiles is not None:
            doc["profiles"] = {n: without_summaries(o) for n, o in profiles.items()}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return code
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
    return code


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
