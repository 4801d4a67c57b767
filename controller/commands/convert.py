"""``edgebench convert SRC --out DIR``: fp32 / fp16 / dynamic / int8 variants + manifest.json."""

from __future__ import annotations

import argparse

from controller import defaults
from controller.errors import ExitCode, ToolError
from controller.variants.manifest import VARIANTS as VARIANT_NAMES


def _variants(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in names if v not in VARIANT_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {unknown or text!r}; choose from "
                                         f"{','.join(VARIANT_NAMES)}")
    return names


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="make fp32/fp16/dynamic/int8 TFLite variants of a model, with a manifest",
        description="Convert SRC (a SavedModel folder or .keras/.h5 file: TensorFlow converter; an fp32 "
        ".tflite: ai-edge-quantizer, no TensorFlow) into DIR/NAME.{fp32,fp16,dynamic,int8}.tflite and "
        "DIR/manifest.json. fp16 = float16 weights; dynamic = int8 weights, float activations; int8 = full "
        "integer, calibrated on --calibration data. With --eval every variant runs on this machine and "
        "the accuracy table (top-1, cosine / max abs / RMSE vs fp32) is printed and saved as "
        "DIR/accuracy.json.",
        epilog="Flags a variant when its top-1 is more than --top1-drop points below fp32 (default 2) or "
        "its mean cosine similarity to fp32 is below --min-cosine (default 0.99).",
    )
    p.add_argument("src", metavar="SRC", help="SavedModel folder, .keras/.h5 file, or fp32 .tflite")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the variants and manifest.json")
    p.add_argument("--name", help="file name stem of the variants (default: SRC's name)")
    p.add_argument("--variants", type=_variants, default=VARIANT_NAMES, metavar="LIST",
                   help="comma-separated subset of fp32,fp16,dynamic,int8 (default: all)")
    p.add_argument("--calibration", metavar="DATA", help="representative inputs for int8: .npy, .npz with "
                   "key x, or a folder of images; 'random' = seeded random data (accuracy meaningless)")
    p.add_argument("--calibration-samples", type=int, default=200, metavar="N",
                   help="use at most N calibration samples (default 200)")
    p.add_argument("--io", choices=("float", "int8", "uint8"), default="int8",
                   help="input/output dtype of the int8 variant (default int8)")
    p.add_argument("--compat-runtime", metavar="VERSION", help="emit ops that tflite-runtime VERSION loads "
                   "(e.g. 2.14) and check every variant against it")
    p.add_argument("--eval", metavar="DATA.npz", help="labelled eval set (x, optional y): measure the "
                   "accuracy of every variant on this machine")
    p.add_argument("--top1-drop", type=float, default=defaults.TOP1_DROP,
                   help=f"flag drift: top-1 points below fp32 (default {defaults.TOP1_DROP:g})")
    p.add_argument("--min-cosine", type=float, default=defaults.MIN_COSINE,
                   help=f"flag drift: worst output's mean cosine to fp32 below this (default {defaults.MIN_COSINE:g})")
    p.add_argument("--runtime", default="auto", help="runtime of the --eval runs (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of sample selection and random calibration")
    p.add_argument("--force", action="store_true", help="replace the model folder already in DIR (its "
                   "manifest, variants, eval set and accuracy.json); without it an existing one is refused")
    p.add_argument("--json", action="store_true", help="print a JSON document on stdout (nothing else)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Convert, show progress on stderr, print the table (or JSON); 4 when a variant could not be made
    or fails --compat-runtime (everything that could be made is still written, with its manifest); 1 when
    a variant could not be evaluated on this machine (the other rows are kept)."""
    import json
    import sys
    from pathlib import Path

    from rich.console import Console

    from controller.variants.convert import ConvertOptions, convert
    from controller.variants.view import ProgressView, result_document, variants_table

    options = ConvertOptions(
        src=Path(args.src), out=Path(args.out), name=args.name, variants=tuple(args.variants),
        calibration=args.calibration, calibration_samples=args.calibration_samples, io=args.io,
        compat_runtime=args.compat_runtime, eval=Path(args.eval) if args.eval else None, seed=args.seed,
        top1_drop=args.top1_drop, min_cosine=args.min_cosine, runtime=args.runtime, force=args.force,
    )
    err = Console(stderr=True)
    with ProgressView(err, options.variants) as view:
        result = convert(options, progress=view.update)
    if args.json:
        print(json.dumps(result_document(result), indent=2))
    else:
        out = Console() if sys.stdout.isatty() else Console(width=160)
        for renderable in variants_table(result):
            out.print(renderable)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    if result.accuracy is not None and result.accuracy.flagged:
        err.print(f"[yellow]drift flagged:[/] {', '.join(result.accuracy.flagged)} (see accuracy.json)")
    if result.failures:
        made = ", ".join(result.manifest.variants)
        raise ToolError(f"wrote {made} to {options.out}, but could not make "
                        + " | ".join(f"{v}: {why}" for v, why in result.failures.items()))
    failures = result.compat_failures
    if failures:
        raise ToolError(f"variants written to {options.out}, but tflite-runtime {options.compat_runtime} "
                        f"cannot load: {' | '.join(failures)}")
    if result.accuracy is not None and any(r.status != "ok" for r in result.accuracy.rows):
        bad = [f"{r.variant}: {r.error}" for r in result.accuracy.rows if r.status != "ok"]
        err.print(f"[red]could not evaluate[/] {' | '.join(bad)}")
        return int(ExitCode.PARTIAL)
    return int(ExitCode.OK)
