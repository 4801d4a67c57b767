"""``edgebench inspect MODEL.tflite``: what is in a model file; ``--compare A B --inputs DATA``: where two
variants differ, layer by layer."""

from __future__ import annotations

from controller.errors import ExitCode, UsageError

MEAN_STD_NOTE = (
    "quantized I/O: real = (q - zero_point) x scale. The converter's old (mean, std_dev) for an input "
    "are mean = zero_point, std_dev = 1 / scale; float range = ((qmin - zp) x scale, (qmax - zp) x scale)."
)


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="show a .tflite model's I/O, quantization, ops, weights; or compare two variants per layer",
        description="Show MODEL's inputs and outputs (shape, signature, dtype, scale, zero_point, and for "
        "quantized I/O the equivalent (mean, std_dev) and float range), op codes with versions and counts, "
        "custom and Select-TF ops, subgraphs, weight dtypes, sparsity, min runtime version and size. Reads "
        "the file itself: no runtime needed. With --compare A B --inputs DATA: run both on DATA and list "
        "the tensors with the largest error between them (matched by name).",
        epilog=MEAN_STD_NOTE,
    )
    p.add_argument("model", nargs="?", metavar="MODEL.tflite")
    p.add_argument("--compare", nargs=2, metavar=("A.tflite", "B.tflite"),
                   help="compare every activation tensor of A and B (A is the reference)")
    p.add_argument("--inputs", metavar="DATA", help="with --compare: .npy or .npz (key x) of float inputs")
    p.add_argument("--samples", type=int, default=16, help="with --compare: samples to run (default 16)")
    p.add_argument("--top", type=int, default=15, help="with --compare: tensors to list (default 15)")
    p.add_argument("--check", action="append", default=[], metavar="RUNTIME=VERSION",
                   help="also say whether that runtime loads MODEL, e.g. tflite-runtime=2.14.0 (repeatable)")
    p.add_argument("--json", action="store_true", help="print a JSON document instead of tables")
    p.set_defaults(func=run)


def run(args) -> int:
    """Inspect or compare; 0 on success (errors are raised and mapped by the CLI)."""
    if args.compare:
        if args.model:
            raise UsageError("give either MODEL or --compare A B, not both")
        if not args.inputs:
            raise UsageError("--compare needs --inputs DATA (.npy or .npz with key x) to run both models on")
        if args.samples < 1 or args.top < 1:
            raise UsageError("--samples and --top must be >= 1")
        return _compare(args)
    if not args.model:
        raise UsageError("give a MODEL.tflite to inspect (or --compare A B --inputs DATA)")
    return _inspect(args)


def _checks(args, info) -> list:
    from controller.model.compat import check_info

    out = []
    for item in args.check:
        runtime, sep, version = item.partition("=")
        if not sep or not version:
            raise UsageError(f"--check takes RUNTIME=VERSION (e.g. tflite-runtime=2.14.0), got {item!r}")
        out.append(check_info(info, runtime.strip(), version.strip()))
    return out


def _io_rows(info) -> list[dict]:
    rows = []
    for kind, tensors in (("input", info.inputs), ("output", info.outputs)):
        for t in tensors:
            row = {"kind": kind, **t.io_dict(), "mean_std": t.mean_std(), "float_range": t.float_range()}
            rows.append(row)
    return rows


def _inspect(args) -> int:
    import json
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from controller.console import console as stdout_console
    from controller.model.compat import min_runtime_for
    from controller.model.reader import read_model
    from controller.variants.manifest import warnings_about

    path = Path(args.model)
    info = read_model(path)
    checks = _checks(args, info)
    warnings = warnings_about(path)
    dynamic = [t.name for t in info.inputs if any(d < 0 for d in t.shape_signature[1:])]
    if dynamic:
        warnings.append(f"dynamic input dimensions in {dynamic}: jobs must give --input-shape")
    if args.json:
        doc = info.to_dict()
        doc["io"] = _io_rows(info)
        doc["checks"] = [c.to_dict() for c in checks]
        doc["warnings"] = warnings
        print(json.dumps(doc, indent=2))
        return int(ExitCode.OK)

    console = stdout_console()
    console.print(f"[bold]{path}[/]  {info.bytes:,} bytes  sha256 {info.sha256[:16]}...  schema v"
                  f"{info.schema_version}  min runtime version: {info.min_runtime_version or 'not recorded'}")
    console.print(f"subgraphs: {len(info.subgraphs)} ("
                  + ", ".join(f"{s.name or '#' + str(i)}: {s.operators} ops, {s.tensors} tensors"
                              for i, s in enumerate(info.subgraphs))
                  + f")   signatures: {', '.join(info.signatures) or 'none'}")
    io = Table(title="inputs and outputs")
    for col in ("", "name", "shape", "signature", "dtype", "scale", "zero_point", "(mean, std_dev)",
                "float range"):
        io.add_column(col)
    for row in _io_rows(info):
        ms, fr = row["mean_std"], row["float_range"]
        io.add_row(row["kind"], row["name"], str(row["shape"]), str(row["shape_signature"]), row["dtype"],
                   "-" if row["scale"] is None else f"{row['scale']:.6g}",
                   "-" if row["zero_point"] is None else str(row["zero_point"]),
                   "-" if ms is None else f"({ms[0]:g}, {ms[1]:.6g})",
                   "-" if fr is None else f"[{fr[0]:.6g}, {fr[1]:.6g}]")
    console.print(io)
    ops = Table(title=f"operators ({sum(info.op_counts.values())} in all subgraphs)")
    for col in ("op", "version", "count", "kind", "needs runtime (TF)"):
        ops.add_column(col, justify="right" if col in ("version", "count") else "left")
    for op in info.ops:
        kind = "Select-TF (Flex)" if op.flex else "custom" if op.custom else "builtin"
        need = "-" if op.custom else (min_runtime_for(op.name, op.version) or "unknown")
        ops.add_row(op.name, str(op.version), str(op.count), kind, need)
    console.print(ops)
    weights = Table(title="weights (constant tensors)")
    for col in ("dtype", "tensors", "bytes"):
        weights.add_column(col, justify="left" if col == "dtype" else "right")
    for w in info.weights:
        weights.add_row(w.dtype, str(w.tensors), f"{w.bytes:,}")
    console.print(weights)
    console.print(f"custom ops: {', '.join(info.custom_ops) or 'none'}   Select-TF ops: "
                  f"{', '.join(info.flex_ops) or 'none'}   sparse tensors: "
                  f"{', '.join(info.sparse_tensors) or 'none'}")
    quantized = any(w.dtype in ("int8", "uint8", "int16") for w in info.weights)
    if quantized and any(t.scale is not None for t in info.inputs):
        float_ops = info.float_compute_ops()
        console.print("ops computing in float: " + (", ".join(float_ops) if float_ops else
                                                     "none (full integer end to end)"))
    if any(r["mean_std"] for r in _io_rows(info)):
        console.print(f"[dim]{MEAN_STD_NOTE}[/]")
    for c in checks:
        verdict = "[green]loads[/]" if c.ok else "[red]does NOT load[/]"
        console.print(f"{c.runtime} {c.runtime_version} (= TF {c.tf_equivalent}): {verdict}")
        for reason in c.reasons:
            console.print(f"  - {reason}")
    err = Console(stderr=True)
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}")
    return int(ExitCode.OK)


def _compare(args) -> int:
    import json

    from rich.table import Table

    from controller.console import console as stdout_console
    from controller.model.layer_compare import compare_layers

    a, b = args.compare
    result = compare_layers(a, b, args.inputs, max_samples=args.samples)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return int(ExitCode.OK)
    console = stdout_console()
    table = Table(title=f"largest errors of {b} against {a} ({result.samples} samples, {result.runtime})")
    for col in ("tensor", "shape", "dtypes", "rel RMSE", "RMSE", "max abs", "cosine"):
        table.add_column(col, justify="left" if col in ("tensor", "shape", "dtypes") else "right")
    for d in result.diffs[:args.top]:
        table.add_row(d.name if len(d.name) <= 60 else d.name[:57] + "...", str(d.shape),
                      f"{d.dtype_a}/{d.dtype_b}", f"{d.rel_rmse:.4g}", f"{d.rmse:.4g}", f"{d.max_abs:.4g}",
                      f"{d.cosine:.5f}")
    console.print(table)
    console.print(f"matched by name: {len(result.diffs)} activation tensors (rel RMSE = RMSE / RMS of A).")
    if not (result.only_in_a or result.only_in_b or result.shape_mismatch):
        console.print("every activation tensor of each model was matched in the other.")
    if result.only_in_a:
        console.print(f"could not be matched - only in A ({len(result.only_in_a)}): "
                      + ", ".join(result.only_in_a))
    if result.only_in_b:
        console.print(f"could not be matched - only in B ({len(result.only_in_b)}): "
                      + ", ".join(result.only_in_b))
    if result.shape_mismatch:
        console.print("same name, different shape (not compared): " + "; ".join(result.shape_mismatch))
    return int(ExitCode.OK)
