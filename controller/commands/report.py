"""``edgebench report [RUN | --last]``: write report.html / report.md / report.csv of a run."""

from __future__ import annotations

import argparse

from controller import defaults
from controller.commands.history import add_store_argument


def _formats(text: str) -> tuple[str, ...]:
    from controller.history.report import FORMATS

    values = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in values if f not in FORMATS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"--format takes a comma-separated list of {', '.join(FORMATS)}, "
                                         f"got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write the report of a run: report.html (self-contained, with plots), report.md, report.csv",
        description="Per model x device x threads x variant: p50/p90/p99, CV, speedup vs fp32, size and ratio "
        "vs fp32, peak memory, init and first-inference time, top-1 and drift vs fp32 (cosine, max abs, "
        "RMSE), status and error, flags (noisy, throttled, drift, partial). The HTML adds plots: latency, "
        "speedup heat map, size x latency x accuracy, memory, and trend lines from the history. Written into "
        "the run folder unless --dest; prints the paths.",
    )
    p.add_argument("run", nargs="?", metavar="RUN", help="run folder or run id under --out (default: --last)")
    p.add_argument("--last", action="store_true", help="the most recent run under --out")
    p.add_argument("--format", type=_formats, default=("html", "md", "csv"),
                   help="comma-separated: html,md,csv (default all three)")
    p.add_argument("--dest", metavar="DIR", help="write the reports here (default: the run folder)")
    p.add_argument("--baseline", metavar="RUN", help="a run folder or id: add p50 change vs that run")
    p.add_argument("--out", default=defaults.OUT_DIR, help=f"the reports folder (default {defaults.OUT_DIR}/)")
    add_store_argument(p)
    p.add_argument("--json", action="store_true", help="print {run_dir, files} as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the reports; return 0 (2 for a bad run folder, option or store)."""
    import json
    import sys

    from controller.errors import UsageError
    from controller.history.frame import last_run, resolve_run
    from controller.history.report import write_report

    if args.run and args.last:
        raise UsageError("give RUN or --last, not both")
    run_dir = resolve_run(args.run, args.out) if args.run else last_run(args.out)
    paths = write_report(run_dir, args.format, dest=args.dest, baseline=args.baseline,
                         out_dir=args.out if args.run is None or not _outside(run_dir, args.out) else None,
                         store_url=args.store)
    if args.json:
        sys.stdout.write(json.dumps({"run_dir": str(run_dir), "files": [str(p) for p in paths]}, indent=2) + "\n")
    else:
        for path in paths:
            print(path)
    return 0


def _outside(run_dir, out: str) -> bool:
    """True when ``run_dir`` is not directly under the reports folder ``out`` (then its own parent holds
    its history)."""
    from pathlib import Path

    return Path(run_dir).resolve().parent != Path(out).resolve()
