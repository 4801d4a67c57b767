"""The models of a run: what the command line names (``.tflite`` files, or folders with a manifest) as
:class:`ModelRef` values, each with its content hash; and the eval data check."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.modelfile import sha256_of
from agent.regular_file import NotRegularFile, check_regular
from controller.errors import InputError

MODEL_SUFFIX = ".tflite"



@dataclass(frozen=True)
class ModelRef:
    """One model file to run: its family name, variant, local path and content hash."""

    name: str
    variant: str
    path: str
    sha256: str
    bytes: int
    eval_path: str | None = None  #: the family's labelled eval set (from its manifest), if any


@functools.lru_cache(maxsize=256)
def model_info(path: str, sha256: str) -> Any:
    """The model's :class:`~controller.model.reader.ModelInfo`, read once per run however many devices
    check it (``sha256`` is part of the key, so a changed file is read again). Raises InputError."""
    from controller.model.reader import read_model

    return read_model(path)


def collect_models(paths: Sequence[str]) -> list[ModelRef]:
    """The models named on the command line: .tflite files, or folders with a manifest.json (all of
    their variants). A file named ``<name>.<variant>.tflite`` gets that variant, any other its stem.

    Raises InputError naming a path that does not exist or is neither kind.
    """
    from controller.variants import manifest as manifest_mod

    models: list[ModelRef] = []
    for path in paths:
        if os.path.isdir(path) or os.path.basename(path) == manifest_mod.MANIFEST_NAME:
            manifest = manifest_mod.load(path)
            eval_path = str(manifest.eval_path) if manifest.eval_path else None
            for variant in manifest.variants.values():
                models.append(ModelRef(manifest.name, variant.name, str(variant.path), variant.sha256,
                                       variant.bytes, eval_path))
        else:
            try:
                digest = sha256_of(path)  # refuses, at once, what is no readable regular file (a FIFO ...)
            except NotRegularFile as exc:
                raise InputError(f"model {exc}; give .tflite files or folders with a manifest.json (made by "
                                 "edgebench convert)") from None
            if not path.endswith(MODEL_SUFFIX):
                raise InputError(f"{path}: not a .tflite file or a folder with manifest.json")
            stem = os.path.basename(path)[: -len(MODEL_SUFFIX)]
            name, _, variant = stem.rpartition(".")
            if variant not in manifest_mod.VARIANTS:
                name, variant = stem, "-"
            models.append(ModelRef(name, variant, os.path.abspath(path), digest, os.path.getsize(path)))
    if not models:
        raise InputError("no models to run")
    return models


def check_eval_data(path: str) -> None:
    """Raise InputError unless ``path`` is a .npz (or .npy) with the eval inputs (``x`` or per-input
    arrays) and, if present, integer labels ``y`` with one label per sample."""
    import numpy as np

    try:
        check_regular(path)  # a FIFO would block np.load, /dev/zero be read forever
    except NotRegularFile as exc:
        raise InputError(f"--eval {exc}; give a .npz with x (inputs) and y (labels)") from None
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
        raise InputError(f"--eval {path}: not a readable .npz/.npy file ({exc})") from exc
    if isinstance(data, np.ndarray):
        return
    with data:
        if not data.files:
            raise InputError(f"--eval {path}: the .npz holds no arrays; it needs x (and optional y)")
        if "y" in data.files:
            labels = data["y"]
            inputs = [data[k] for k in data.files if k not in ("y", "labels")]
            if labels.dtype.kind not in "iu" or labels.ndim != 1:
                raise InputError(f"--eval {path}: y must be a 1-D array of integer labels, got "
                                 f"{labels.dtype} {labels.shape}")
            if inputs and len(inputs[0]) != len(labels):
                raise InputError(f"--eval {path}: {len(inputs[0])} input samples but {len(labels)} labels")
