"""``edgebench profile MODEL... [--device NAME] [--json]``: the latency of each op, measured on the device."""

from __future__ import annotations

import argparse

from agent.job import RUNTIME_CHOICES, JobSpec
from controller.commands.selection import add_inventory_arguments
from controller.fleet.profile import ProfileOptions


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="per-op latency of a model on a device (single-op models fed with real intermediates)",
        description="Cut every op of each MODEL into a model of its own, then on the device (this machine "
        "without --device) time the whole model and each op alone, fed with the whole model's real "
        "intermediate tensors, on the kernel the op runs on in the whole model (XNNPACK or the CPU). Prints "
        "per op: index, type, p50 µs, share of the sum, delegated or not; per op type; and the sum of op "
        "times next to the whole model's p50 (a sanity ratio). Several models (or a folder with "
        "manifest.json: every variant) add a table of µs per op type and variant.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help=".tflite file or folder with manifest.json")
    p.add_argument("--device", metavar="NAME", help="profile on this device of the fleet file (default: here)")
    add_inventory_arguments(p)
    p.add_argument("--threads", type=int, default=JobSpec.threads,
                   help=f"interpreter threads (default {JobSpec.threads})")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, help="runtime on this machine (default auto; on a "
                   "device its runtime key)")
    p.add_argument("--no-xnnpack", action="store_true", help="run the model and every op without XNNPACK")
    p.add_argument("--inputs", metavar="FILE.npz", help="input data (the first sample is used); default "
                   "seeded random values")
    d = ProfileOptions
    p.add_argument("--runs", type=int, default=d.runs, help=f"whole model: at least this many timed runs ({d.runs})")
    p.add_argument("--min-seconds", type=float, default=d.min_seconds,
                   help=f"whole model: time at least this long ({d.min_seconds:g})")
    p.add_argument("--op-runs", type=int, default=d.op_runs,
                   help=f"each op: at least this many timed runs ({d.op_runs})")
    p.add_argument("--op-min-seconds", type=float, default=d.op_min_seconds,
                   help=f"each op: time at least this long ({d.op_min_seconds:g})")
    p.add_argument("--timeout", type=float, default=d.timeout,
                   help=f"deadline of one model's profile, seconds ({d.timeout:g})")
    p.add_argument("--agent", metavar="PYZ", help="agent zipapp to push (default: built from this tree)")
    p.add_argument("--json", action="store_true", help="print JSON: one model's summary object, or "
                   '{"profiles": [...]} for several')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Profile every model; 0 when every profile ran, 1 when one failed (or the device did), 3 when the
    device is unreachable, 130 interrupted (the one rule of :mod:`controller.fleet.group`)."""
    import json
    import os
    import sys

    from controller.console import console
    from controller.errors import ExitCode, InputError, UsageError
    from controller.fleet import profile_view as report
    from controller.fleet.models import collect_models
    from controller.fleet.profile import ProfileOptions, profile_local, profile_one_device

    if args.threads < 1 or args.runs < 1 or args.op_runs < 1:
        raise UsageError("--threads, --runs and --op-runs must be >= 1")
    if args.min_seconds < 0 or args.op_min_seconds < 0 or args.timeout <= 0:
        raise UsageError("--min-seconds and --op-min-seconds must be >= 0, --timeout > 0")
    if args.inputs and not os.path.isfile(args.inputs):
        raise InputError(f"--inputs {args.inputs}: no such file; give a .npy/.npz with the model's inputs")
    models = collect_models(args.models)
    options = ProfileOptions(runtime=args.runtime or "auto", xnnpack=not args.no_xnnpack,
                             inputs=args.inputs, runs=args.runs, min_seconds=args.min_seconds,
                             op_runs=args.op_runs, op_min_seconds=args.op_min_seconds, timeout=args.timeout)
    targets = [(position, model, args.threads) for position, model in enumerate(models)]
    if args.device:
        from controller.commands.selection import load_inventory
        from controller.fleet.agent_build import agent_zipapp

        [device] = load_inventory(args).select([args.device], [])
        group = profile_one_device(device, targets, options, args.agent or agent_zipapp())
        outcome = group.outcomes[device.name]
        if not outcome.ok:
            console(stderr=True).print(f"[red]profile on {outcome.device} failed[/] ({outcome.kind}): "
                                       f"{outcome.reason}", soft_wrap=True)
            return int(group.exit_code())
        docs = outcome.value
    else:
        docs = profile_local(targets, options)
    summaries = [report.summarize(doc) for doc in docs]
    if args.json:
        out = summaries[0] if len(summaries) == 1 else {"profiles": summaries}
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
    else:
        con = console()
        for summary in summaries:
            if summary["ops"]:
                con.print(report.ops_table(summary))
                con.print(report.types_table(summary))
            con.print(report.ratio_line(summary), soft_wrap=True, highlight=False)
        if len(summaries) > 1:
            con.print(report.variants_table(summaries))
    return int(ExitCode.OK if all(d.get("status") == "ok" for d in docs) else ExitCode.PARTIAL)
