"""``edgebench compare BASE NEW``: which jobs regressed or improved between two run folders."""

from __future__ import annotations

import argparse

from controller import defaults
from controller.history.compare import Limits


def add_limit_arguments(p: argparse.ArgumentParser, accuracy: bool = True) -> None:
    """The options that decide what counts as a regression (shared by ``compare`` and ``nightly``, whose
    run options already have ``--top1-drop`` / ``--min-cosine``: ``accuracy=False``)."""
    d = Limits()
    p.add_argument("--threshold", type=float, default=d.threshold, metavar="R",
                   help=f"p50 ratio that counts as a change (default {d.threshold:g})")
    p.add_argument("--alpha", type=float, default=d.alpha, metavar="A",
                   help=f"significance level of the Mann-Whitney U test on the raw samples (default {d.alpha:g})")
    if accuracy:
        p.add_argument("--top1-drop", type=float, default=d.top1_drop,
                       help=f"top-1 points lost (vs BASE, or below fp32 for drift) that count (default {d.top1_drop:g})")
        p.add_argument("--min-cosine", type=float, default=d.min_cosine,
                       help=f"cosine to fp32 below this is drift (default {d.min_cosine:g})")
    p.add_argument("--memory-ratio", type=float, default=d.memory_ratio,
                   help=f"peak memory growth ratio that counts (default {d.memory_ratio:g}, and >= 1 MiB)")


def limits_from(args: argparse.Namespace) -> Limits:
    """The Limits asked for on the command line. Raises UsageError for an impossible value."""
    limits = Limits(threshold=args.threshold, alpha=args.alpha, top1_drop=args.top1_drop,
                    min_cosine=args.min_cosine, memory_ratio=args.memory_ratio)
    limits.check()
    return limits


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two runs: regressions, improvements, unpaired jobs",
        description="Pair the jobs of two run folders by device, model, variant and threads (comparable when "
        "the device fingerprint, model sha256 and runtime + version match). A pair regressed when a "
        "Mann-Whitney U test on the raw samples is significant AND the p50 ratio passes --threshold; "
        "accuracy loss, drift and peak-memory growth are regressions of their own kinds. "
        "Exit 5 when anything regressed, 0 otherwise.",
    )
    p.add_argument("base", metavar="BASE", help="run folder (or run id under --out) to compare against")
    p.add_argument("new", metavar="NEW", help="run folder (or run id under --out) to judge")
    add_limit_arguments(p)
    p.add_argument("--out", default=defaults.OUT_DIR, help=f"where run ids are looked up (default {defaults.OUT_DIR}/)")
    p.add_argument("--all", action="store_true", help="list unchanged pairs too")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from controller.console import console
    from controller.errors import ExitCode
    from controller.history.compare import compare_runs
    from controller.history.compare_view import comparison_table, summary_line
    from controller.history.frame import resolve_run

    limits = limits_from(args)
    comparison = compare_runs(str(resolve_run(args.base, args.out)), str(resolve_run(args.new, args.out)), limits)
    code = ExitCode.REGRESSION if comparison.regressions else ExitCode.OK
    if args.json:
        sys.stdout.write(json.dumps({**comparison.to_dict(), "exit_code": int(code)}, indent=2) + "\n")
        return int(code)
    out = console()
    out.print(comparison_table(comparison, everything=args.all))
    out.print(summary_line(comparison), highlight=False)
    return int(code)
