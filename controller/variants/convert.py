"""``edgebench convert``: one model -> fp32 / fp16 / dynamic-range / int8 TFLite variants + manifest.

Sources and the tool that converts them:

- a SavedModel folder, a ``.keras`` or ``.h5`` file: the TensorFlow converter (extra ``convert``);
- an fp32 ``.tflite``: ai-edge-quantizer (extra ``quantize``; TensorFlow is never imported).

Variants: ``fp32`` as converted; ``fp16`` float16 weights; ``dynamic`` int8 weights with float
activations (dynamic-range); ``int8`` full integer from a representative dataset, builtin int8 ops
only, I/O dtype per ``ConvertOptions.io``. int8 without calibration data is refused unless the
calibration is explicitly ``"random"`` (recorded in the manifest, warned about by ``inspect``).

``compat_runtime`` ("2.14") asks the TF converter for ops that runtime loads: below 2.17 dense layers
are quantized per tensor (per-channel dynamic-range FULLY_CONNECTED is v12, new in 2.17), and every
variant is checked with :func:`controller.model.compat.check` against ``tflite-runtime <version>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from agent.regular_file import NotRegularFile, check_regular
from controller import defaults
from controller.errors import EdgebenchError, InputError, ToolError, UsageError
from controller.model import compat
from controller.model.reader import ModelInfo, read_model, read_model_bytes
from controller.variants import manifest as mf
from controller.variants.backends import Backend, QuantizerBackend, TFBackend
from controller.variants.calibration import (
    RANDOM,
    SampleSet,
    load_calibration,
    load_eval,
    random_calibration,
    single_input,
)

VARIANTS = mf.VARIANTS
IO_CHOICES = ("float", "int8", "uint8")
MAX_CALIBRATION_SAMPLES = 1_000_000  #: more would not fit in memory as float32 images anyway

#: Called as progress(event, info): ("variant", {"variant", "index", "total"}), ("calibrate", {"done",
#: "total"}), ("written", {"variant", "bytes"}), ("eval", {"variant"}).
ProgressFn = Callable[[str, dict], None]


@dataclass
class ConvertOptions:
    """Everything ``edgebench convert`` was asked for."""

    src: Path
    out: Path
    name: str | None = None
    variants: tuple[str, ...] = VARIANTS
    calibration: str | None = None  #: a path, or "random"
    calibration_samples: int = 200
    io: str = "int8"  #: I/O dtype of the int8 variant
    compat_runtime: str | None = None  #: e.g. "2.14": make variants tflite-runtime 2.14 loads
    eval: Path | None = None  #: labelled .npz: run every variant on this machine and compare
    seed: int = 0
    top1_drop: float = defaults.TOP1_DROP  #: flag a variant whose top-1 is more than this many points below fp32
    min_cosine: float = defaults.MIN_COSINE  #: flag a variant whose mean cosine similarity to fp32 is below this
    runtime: str = "auto"  #: runtime of the eval runs
    force: bool = False  #: replace the model folder already in ``out`` (default: refuse)

    def validate(self) -> None:
        """Raise UsageError for an option out of range (files are checked later, by the converter)."""
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise UsageError(f"unknown variant(s) {unknown}; choose from {','.join(VARIANTS)}")
        if len(set(self.variants)) != len(self.variants):
            raise UsageError(f"a variant is named twice in {','.join(self.variants)}")
        if self.io not in IO_CHOICES:
            raise UsageError(f"--io must be one of {', '.join(IO_CHOICES)}, got {self.io!r}")
        if not 1 <= self.calibration_samples <= MAX_CALIBRATION_SAMPLES:
            raise UsageError(f"--calibration-samples must be between 1 and {MAX_CALIBRATION_SAMPLES}, "
                             f"got {self.calibration_samples}")
        from controller.variants.scoring import Thresholds

        Thresholds(self.top1_drop, self.min_cosine)  # the one check of the drift thresholds
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"--seed must be between 0 and 2^32-1, got {self.seed}")
        if self.compat_runtime is not None:
            compat.parse_version(self.compat_runtime)
        if self.name is not None and (not self.name or "/" in self.name or self.name.startswith(".")):
            raise UsageError(f"--name {self.name!r} must be a plain file name stem")
        if "int8" in self.variants and not self.calibration:
            raise UsageError(
                "the int8 variant needs calibration data: full-integer quantization fixes the range of "
                "every activation from samples of real inputs, and ranges taken from the wrong data ruin "
                "accuracy. Give --calibration DATA (.npy, .npz with key 'x', or a folder of images; "
                "a few hundred typical inputs), or --calibration random to accept meaningless ranges "
                "(the manifest will say so), or leave int8 out of --variants"
            )


@dataclass
class ConvertResult:
    manifest: mf.Manifest
    compat: dict[str, compat.Compat] = field(default_factory=dict)  #: per variant, with compat_runtime
    accuracy: Any = None  #: controller.variants.evaluate.AccuracyReport when --eval was given
    warnings: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  #: variant -> why the tool could not make it

    @property
    def compat_failures(self) -> list[str]:
        return [f"{v}: {'; '.join(c.reasons)}" for v, c in self.compat.items() if not c.ok]


def source_kind(src: Path) -> str:
    """``saved_model`` / ``keras`` / ``tflite`` for ``src``. Raises InputError naming it otherwise."""
    if not src.is_dir():
        try:
            check_regular(src)  # a FIFO would block the converter, /dev/zero be read forever
        except NotRegularFile as exc:
            raise InputError(f"{src} {exc.reason}; give a SavedModel folder, a .keras/.h5 file or an fp32 "
                             ".tflite") from None
    if src.is_dir():
        if (src / "saved_model.pb").is_file() or (src / "saved_model.pbtxt").is_file():
            return "saved_model"
        raise InputError(f"{src}: a folder without saved_model.pb is not a SavedModel; export one with "
                         "tf.saved_model.save(model, path) or model.export(path)")
    suffix = src.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        return "keras"
    if suffix == ".tflite":
        return "tflite"
    raise InputError(f"{src}: unknown kind of model ({suffix or 'no suffix'}); give a SavedModel folder, "
                     "a .keras/.h5 file or an fp32 .tflite")


def convert(options: ConvertOptions, progress: ProgressFn | None = None) -> ConvertResult:
    """Convert ``options.src`` into the asked variants in ``options.out`` and write ``manifest.json``.

    Promises: every written variant is a readable TFLite file listed in the manifest with its sha256,
    size, converter, options, calibration and I/O quantization; with ``eval``, every variant was run on
    this machine and the accuracy table is in the result (and ``accuracy.json`` beside the manifest).
    A variant the converter or quantizer cannot make is listed in ``result.failures`` and the others
    are still written (the CLI then exits 4). Raises UsageError / InputError for bad options or inputs
    (before anything is written), ToolError when no variant at all can be made or an extra is missing.
    """
    src = Path(options.src)
    kind = source_kind(src)  # a missing or unknown SRC is the first thing to report
    options.validate()
    say = progress or (lambda event, info: None)
    name = options.name or (src.name if src.is_dir() else src.stem)
    if not options.name and kind == "tflite" and name.endswith(".fp32"):
        name = name[: -len(".fp32")]  # model.fp32.tflite -> model.{fp16,dynamic,int8}.tflite
    out = Path(options.out)
    replacing = check_out(out, name, options.force)
    if kind == "tflite" and options.io != "int8" and "int8" in options.variants:
        raise UsageError(f"--io {options.io}: for an fp32 .tflite source ai-edge-quantizer makes int8 I/O "
                         "only; use --io int8, or convert from the Keras/SavedModel source")

    backend: Backend = TFBackend(src, kind, options) if kind != "tflite" else QuantizerBackend(src, options)
    with _stdout_to_stderr():
        fp32_bytes = backend.fp32()
    fp32_info = read_model_bytes(fp32_bytes, name=f"{name}.fp32.tflite")
    if kind == "tflite":
        _require_float(src, fp32_info)

    calibration = None
    if "int8" in options.variants:
        tensor = single_input(fp32_info.inputs, "--calibration")
        if options.calibration == RANDOM:
            calibration = random_calibration(tensor, options.calibration_samples, options.seed)
        else:
            calibration = load_calibration(options.calibration, tensor, options.calibration_samples,
                                           options.seed)
    eval_set = None
    if options.eval is not None:
        tensor = single_input(fp32_info.inputs, "--eval")
        first_out = fp32_info.outputs[0].shape if fp32_info.outputs else []
        eval_set = load_eval(options.eval, tensor, int(first_out[-1]) if first_out else None)

    out.mkdir(parents=True, exist_ok=True)
    variants: dict[str, mf.Variant] = {}
    failures: dict[str, str] = {}
    notes: list[str] = []
    verdicts: dict[str, compat.Compat] = {}
    for index, variant in enumerate(options.variants):
        say("variant", {"variant": variant, "index": index, "total": len(options.variants)})
        try:
            with _stdout_to_stderr():
                data, variant_options = (fp32_bytes, backend.fp32_options()) if variant == "fp32" else \
                    backend.variant(variant, calibration, say)
        except ToolError as exc:  # one variant the tool cannot make: keep going, keep the others
            failures[variant] = str(exc)
            say("written", {"variant": variant, "bytes": 0})
            continue
        path = out / f"{name}.{variant}.tflite"
        _write_atomic(path, data)
        info = read_model(path)
        variants[variant] = _variant_entry(variant, path, info, backend, variant_options,
                                           calibration if variant == "int8" else None)
        say("written", {"variant": variant, "bytes": info.bytes})
        float_ops = info.float_compute_ops() if variant == "int8" else []
        if float_ops:
            notes.append(f"{path.name} computes {', '.join(float_ops)} in float (the converter found no "
                         "int8 kernel and dequantized around it): it is not full integer end to end, which "
                         "matters on int8-only accelerators")
        if options.compat_runtime:
            verdicts[variant] = compat.check_info(info, "tflite-runtime", options.compat_runtime)

    if not variants:
        raise ToolError("no variant could be made: " + " | ".join(failures.values()))
    eval_record = None
    if eval_set is not None:
        eval_file = out / f"{name}.eval.npz"
        if Path(options.eval).resolve() != eval_file.resolve():
            arrays = {"x": eval_set.x} if eval_set.y is None else {"x": eval_set.x, "y": eval_set.y}
            np.savez_compressed(eval_file, **arrays)
        eval_record = {"file": eval_file.name, "samples": len(eval_set), "labels": eval_set.y is not None}

    manifest = mf.Manifest(
        path=out / mf.MANIFEST_NAME, name=name,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        source={"path": str(src), "kind": kind, "sha256": _source_sha256(src)},
        variants=variants, eval=eval_record,
    )
    mf.write(manifest)
    notes += _replaced(out, replacing, manifest)
    result = ConvertResult(manifest=manifest, compat=verdicts, warnings=notes, failures=failures)
    if calibration is not None and calibration.random:
        result.warnings.append("int8 was calibrated on random data (--calibration random): its accuracy "
                               "says nothing about real inputs")
    if eval_set is not None:
        from controller.variants import evaluate as accuracy
        from controller.variants.scoring import Thresholds

        thresholds = Thresholds(top1_drop=options.top1_drop, min_cosine=options.min_cosine)
        result.accuracy = accuracy.evaluate(manifest, thresholds=thresholds, runtime=options.runtime,
                                            progress=say)
        accuracy.save(result.accuracy, out / "accuracy.json")
    return result


def check_out(out: Path, name: str, force: bool) -> mf.Manifest | None:
    """Check that ``convert`` may write into ``out``; return the manifest it will replace (``force``), or None.

    Raises UsageError (before anything is converted or written) when ``out`` exists and is not a folder,
    or already holds a model folder (a manifest.json, or a file convert would overwrite) and ``force`` is
    False: converting again would silently replace calibrated variants and drop the manifest's eval entry.
    """
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder; give a folder for the variants and "
                         "manifest.json")
    if not out.is_dir():
        return None
    ours = [out / mf.MANIFEST_NAME, out / "accuracy.json", out / f"{name}.eval.npz",
            *(out / f"{name}.{v}.tflite" for v in VARIANTS)]
    present = sorted(p.name for p in ours if os.path.lexists(p))
    if not present:
        return None
    if not force:
        raise UsageError(f"--out {out} already holds a model folder ({', '.join(present)}); converting again "
                         "would replace it: pass --force to replace it, or choose another --out")
    manifest_path = out / mf.MANIFEST_NAME
    if not manifest_path.is_file():
        return None
    try:
        return mf.load(manifest_path)
    except EdgebenchError:
        return None  # an unreadable old manifest: replaced without a list of what changed


def _replaced(out: Path, old: mf.Manifest | None, new: mf.Manifest) -> list[str]:
    """What ``--force`` changed in a model folder, in words; the old variant files the new manifest does
    not list are removed, so the folder holds what its manifest says."""
    if old is None:
        return []
    notes = []
    for variant, entry in old.variants.items():
        if variant not in new.variants:
            path = out / entry.file
            if path.is_file() and path.resolve().parent == out.resolve():
                path.unlink()
            notes.append(f"--force: variant {variant} of the old manifest was not made again and was removed")
        elif entry.sha256 != new.variants[variant].sha256:
            notes.append(f"--force: variant {variant} was replaced ({entry.sha256[:12]} -> "
                         f"{new.variants[variant].sha256[:12]})")
    if old.eval and not new.eval:
        notes.append(f"--force: the old manifest's eval set ({old.eval.get('file')}) is no longer listed")
    return notes


def _variant_entry(variant: str, path: Path, info: ModelInfo, backend: Backend, options: dict,
                   calibration: SampleSet | None) -> mf.Variant:
    return mf.Variant(
        name=variant, file=path.name, path=path, sha256=info.sha256, bytes=info.bytes,
        converter=backend.converter_record(variant), options=options,
        calibration=calibration.calibration_record() if calibration is not None else None,
        inputs=[t.io_dict() for t in info.inputs], outputs=[t.io_dict() for t in info.outputs],
        min_runtime_version=info.min_runtime_version,
    )


def _require_float(src: Path, info: ModelInfo) -> None:
    quantized = {w.dtype for w in info.weights} & {"int8", "uint8", "float16", "int4", "int16"}
    io_quant = [t.name for t in info.inputs + info.outputs if t.scale is not None]
    if quantized or io_quant:
        raise InputError(f"{src}: this .tflite is already quantized (weights {sorted(quantized)}, quantized "
                         f"I/O {io_quant}); give the fp32 model (or the Keras/SavedModel source)")


def _source_sha256(src: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
    for f in files:
        if src.is_dir():
            digest.update(str(f.relative_to(src)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    from controller.fleet.store import atomic_write

    atomic_write(str(path), data)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what the converters print (Keras' export prints to stdout, also from C++) to stderr, so
    ``--json`` keeps stdout for its document."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
