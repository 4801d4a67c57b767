"""``edgebench history``: a metric over time from the history index; ``--rebuild`` remakes the index."""

from __future__ import annotations

import argparse

from controller import defaults


def add_store_argument(p: argparse.ArgumentParser) -> None:
    """``--store URL``: where the history index lives (shared by run, report, history)."""
    p.add_argument("--store", metavar="URL", default=None,
                   help="history index: postgresql://user@host/db (shared by several controllers); default "
                   "$EDGEBENCH_STORE, else Parquet files under <out>/.history/")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "history",
        help="a metric over time per device x model x variant x threads (sparklines); --rebuild the index",
        description="Show how a metric (default p50_ms) moved over the indexed runs: one line per series = "
        "device, model, variant, threads and device fingerprint (a new runtime or kernel starts a new "
        "series), with its latest value, change vs the median of earlier runs, min, max and a sparkline. "
        "The index is updated at the end of every run; --rebuild remakes it from the run folders.",
    )
    p.add_argument("--device", help="only this device")
    p.add_argument("--model", help="only this model")
    p.add_argument("--variant", help="only this variant (fp32, fp16, dynamic, int8)")
    p.add_argument("--threads", type=int, help="only this thread count")
    p.add_argument("--kind", choices=("run", "nightly"), help="only runs of this kind")
    p.add_argument("--metric", default="p50_ms", help="numeric result column (default p50_ms; e.g. p90_ms, "
                   "peak_rss_kb, init_ms, top1, cosine_vs_fp32)")
    p.add_argument("--limit", type=int, default=50, help="at most this many series in the table (default 50)")
    p.add_argument("--runs", action="store_true", help="list the indexed runs instead")
    p.add_argument("--rebuild", action="store_true", help="remake the index from the run folders under --out")
    p.add_argument("--out", default=defaults.OUT_DIR, help=f"the reports folder (default {defaults.OUT_DIR}/)")
    add_store_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON (every series with its points)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the history; return 0 (2 for a bad option or store)."""
    import json
    import sys

    from controller.console import console
    from controller.errors import UsageError
    from controller.history.api import ensure_built
    from controller.history.frame import SERIES_KEYS
    from controller.history.index import open_index
    from controller.history.series import build_series, check_metric

    metric = check_metric(args.metric)
    if args.limit < 1:
        raise UsageError("--limit must be >= 1")
    out = console()
    with open_index(args.out, args.store) as index:
        if args.rebuild:
            rows = index.rebuild()
            runs = index.runs()
            if not args.json:
                out.print(f"rebuilt {index.description}: {len(runs)} runs, {rows} rows", highlight=False)
        else:
            ensure_built(index)
        if args.runs:
            runs = index.runs(args.kind)
            if args.json:
                sys.stdout.write(runs.to_json(orient="records", date_format="iso", indent=2) + "\n")
            else:
                from controller.history.view import runs_table

                out.print(runs_table(runs))
            return 0
        table = index.results_table(list(SERIES_KEYS) + ["run_id", "created", "status", metric],
                                    device=args.device, model=args.model, variant=args.variant,
                                    threads=args.threads, kind=args.kind)
    series = build_series(table, metric)
    if args.json:
        doc = {"metric": metric, "store": index.description, "series": [s.to_dict() for s in series]}
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return 0
    if not series:
        out.print(f"no ok results with {metric} in {index.description} for this selection "
                  f"(`edgebench history --runs` lists the indexed runs)", highlight=False)
        return 0
    from controller.history.view import series_table

    out.print(series_table(series, metric, args.limit))
    return 0
