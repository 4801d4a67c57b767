"""``manifest.json``: what ``edgebench convert`` made, next to the variant files (docs/internals.md).

One function writes it (:func:`write`), one reads it (:func:`load`). The file carries its version;
a newer one is refused with a clear message, a broken one names the file and the key.

History of MANIFEST_VERSION:
  1 - first version: name, created, source, eval, variants{fp32,fp16,dynamic,int8}: file, sha256,
      bytes, converter, options, calibration, inputs, outputs, min_runtime_version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.regular_file import NotRegularFile, open_regular
from controller.errors import InputError

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 2**20  #: a manifest is a few KiB; reading stops here (a huge file is not one)
VARIANTS = ("fp32", "fp16", "dynamic", "int8")

_VARIANT_KEYS = ("file", "sha256", "bytes", "converter", "options", "calibration", "inputs", "outputs",
                 "min_runtime_version")


@dataclass
class Variant:
    """One variant of the manifest. ``path`` is absolute (``file`` is relative to the manifest)."""

    name: str
    file: str
    path: Path
    sha256: str
    bytes: int
    converter: dict[str, Any]
    options: dict[str, Any]
    calibration: dict[str, Any] | None
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    min_runtime_version: str | None = None

    @property
    def random_calibration(self) -> bool:
        """True when the int8 ranges were calibrated on random data (accuracy is not meaningful)."""
        return bool(self.calibration and self.calibration.get("random"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "sha256": self.sha256, "bytes": self.bytes, "converter": self.converter,
            "options": self.options, "calibration": self.calibration, "inputs": self.inputs,
            "outputs": self.outputs, "min_runtime_version": self.min_runtime_version,
        }


@dataclass
class Manifest:
    """A loaded manifest. ``variants`` keeps the order of VARIANTS."""

    path: Path  #: the manifest.json file
    name: str
    created: str
    source: dict[str, Any]
    variants: dict[str, Variant]
    eval: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  #: keys this version does not interpret

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def eval_path(self) -> Path | None:
        """Absolute path of the labelled eval .npz, or None when the manifest names none."""
        if not self.eval or not self.eval.get("file"):
            return None
        return self.folder / self.eval["file"]

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION, "name": self.name, "created": self.created,
            "source": self.source, "eval": self.eval,
            "variants": {k: v.to_dict() for k, v in self.variants.items()},
        }
        doc.update(self.extra)
        return doc

    def verify(self) -> list[str]:
        """Re-hash every variant file; return one message per file whose sha256 or size differs."""
        problems = []
        for v in self.variants.values():
            data = v.path.read_bytes()
            if len(data) != v.bytes or hashlib.sha256(data).hexdigest() != v.sha256:
                problems.append(f"{v.path}: differs from {self.path} (size or sha256); run edgebench "
                                "convert again")
        return problems


def write(manifest: Manifest) -> Path:
    """Write ``manifest.to_dict()`` to ``manifest.path`` atomically (temp file + rename)."""
    from controller.fleet.store import write_json

    manifest.path.parent.mkdir(parents=True, exist_ok=True)
    write_json(str(manifest.path), manifest.to_dict())
    return manifest.path


def load(folder_or_file: str | Path) -> Manifest:
    """Load ``manifest.json`` (give the file or the folder holding it).

    Promises: every variant's file exists; variants appear in the order fp32, fp16, dynamic, int8.
    Raises InputError naming the file (and key) when it is missing, not JSON, of a newer
    ``manifest_version``, lacks a key, names an unknown variant, or points to a missing model file.
    """
    p = Path(folder_or_file)
    path = p / MANIFEST_NAME if p.is_dir() else p
    try:
        with open_regular(path) as fh:  # a FIFO named manifest.json would block a plain open()
            doc = json.loads(fh.read(MAX_MANIFEST_BYTES).decode("utf-8"))
    except NotRegularFile as exc:
        if exc.missing:
            raise InputError(f"{path}: no manifest here; run 'edgebench convert SRC --out {path.parent}' "
                             "to make the variants and their manifest") from None
        raise InputError(f"manifest {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); run edgebench "
                         "convert again to rewrite it") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: a manifest is a JSON object, found {type(doc).__name__}")
    version = doc.get("manifest_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"{path}: 'manifest_version' is missing or not an integer; is this an "
                         "edgebench manifest?")
    if version > MANIFEST_VERSION:
        raise InputError(f"{path}: manifest_version {version} was written by a newer edgebench (this one "
                         f"reads up to {MANIFEST_VERSION}); upgrade edgebench")
    if version < 1:
        raise InputError(f"{path}: manifest_version {version} is not valid (versions start at 1)")
    for key in ("name", "variants"):
        if key not in doc:
            raise InputError(f"{path}: missing key {key!r}")
    if not isinstance(doc["variants"], dict) or not doc["variants"]:
        raise InputError(f"{path}: 'variants' must be a non-empty object of {', '.join(VARIANTS)}")
    variants: dict[str, Variant] = {}
    unknown = sorted(set(doc["variants"]) - set(VARIANTS))
    if unknown:
        raise InputError(f"{path}: unknown variant(s) {unknown}; variants are {', '.join(VARIANTS)}")
    for name in VARIANTS:
        if name not in doc["variants"]:
            continue
        entry = doc["variants"][name]
        if not isinstance(entry, dict):
            raise InputError(f"{path}: variants.{name} must be an object")
        missing = [k for k in _VARIANT_KEYS if k not in entry]
        if missing:
            raise InputError(f"{path}: variants.{name} lacks key(s) {missing}")
        model_path = path.parent / entry["file"]
        if not model_path.is_file():
            raise InputError(f"{path}: variants.{name} names {entry['file']}, which does not exist in "
                             f"{path.parent}; run edgebench convert again")
        variants[name] = Variant(
            name=name, file=entry["file"], path=model_path, sha256=entry["sha256"],
            bytes=int(entry["bytes"]), converter=dict(entry["converter"] or {}),
            options=dict(entry["options"] or {}), calibration=entry["calibration"],
            inputs=list(entry["inputs"]), outputs=list(entry["outputs"]),
            min_runtime_version=entry["min_runtime_version"],
        )
    known = {"manifest_version", "name", "created", "source", "eval", "variants"}
    return Manifest(
        path=path, name=str(doc["name"]), created=str(doc.get("created", "")),
        source=dict(doc.get("source") or {}), variants=variants, eval=doc.get("eval"),
        extra={k: v for k, v in doc.items() if k not in known},
    )


def warnings_about(model: str | Path) -> list[str]:
    """What the manifest next to the .tflite ``model`` warns about it (int8 ranges calibrated on random
    data; a manifest that cannot be read); [] when there is no manifest there. Never raises InputError."""
    path = Path(model)
    if not (path.parent / MANIFEST_NAME).is_file():
        return []
    try:
        manifest = load(path.parent)
    except InputError as exc:
        return [f"the manifest next to this model is unusable: {exc}"]
    return [f"{v.file} was calibrated on RANDOM data (--calibration random): its int8 ranges, and so its "
            "accuracy, say nothing about real inputs"
            for v in manifest.variants.values() if v.path.resolve() == path.resolve() and v.random_calibration]
