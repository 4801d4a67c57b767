"""Will this runtime load this model? Decided from the file alone, before anything is pushed.

:func:`check` reads the model (:mod:`controller.model.reader`, no runtime needed) and compares each
operator's (op, version) with the first runtime release that has it (:mod:`controller.model.compat_table`,
from TF's ``runtime_version.cc``). Refusals: an op version newer than the runtime, a Select-TF (Flex)
op on a runtime without TensorFlow, a custom op the stock runtime does not register, an op code newer
than this table. Warnings (``ok`` stays True): an input with a dynamic non-batch dimension (the job
must give its shape), an op version the table has no figure for.

Runtime versions: ``tflite-runtime`` and ``tensorflow`` are numbered like TensorFlow; ``ai-edge-litert``
has its own numbers, mapped to the TF release it tracks by ``compat_table.LITERT_TO_TF``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from agent.job import RUNTIME_CHOICES
from controller.errors import UsageError
from controller.model.compat_table import LITERT_TO_TF, MIN_RUNTIME, STOCK_CUSTOM_OPS
from controller.model.reader import ModelInfo, read_model

RUNTIMES = tuple(r for r in RUNTIME_CHOICES if r != "auto")  #: the agent's runtimes by name

Version = tuple[int, int, int]


@dataclass
class Compat:
    """The answer of :func:`check`. ``reasons`` lists refusals first, then warnings; each says what
    to do. ``ok`` is False exactly when there is a refusal."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  #: the reasons that are not refusals
    runtime: str = ""
    runtime_version: str = ""
    tf_equivalent: str = ""  #: the TF release whose op versions this runtime has
    required: str | None = None  #: highest minimum runtime (TF release) the model's ops need

    def to_dict(self) -> dict:
        return {
            "ok": self.ok, "reasons": list(self.reasons), "warnings": list(self.warnings),
            "runtime": self.runtime, "runtime_version": self.runtime_version,
            "tf_equivalent": self.tf_equivalent, "required": self.required,
        }


def parse_version(text: str) -> Version:
    """``"2.14.0"``, ``"2.14"``, ``"2.16.0rc1"`` -> (2, 14, 0) / (2, 14, 0) / (2, 16, 0).

    Raises UsageError when the text does not start with a number."""
    parts = re.findall(r"\d+", str(text).split("+")[0])[:3]
    if not parts or not re.match(r"\s*\d", str(text)):
        raise UsageError(f"runtime version {text!r} is not a version number like 2.14.0")
    nums = [int(p) for p in parts] + [0] * (3 - len(parts))
    return (nums[0], nums[1], nums[2])


def _fmt(v: Version) -> str:
    return ".".join(str(x) for x in v)


def tf_equivalent(runtime_name: str, runtime_version: str) -> Version:
    """The TensorFlow release whose TFLite ops ``runtime_name`` ``runtime_version`` has.

    Raises UsageError for an unknown runtime name or a version that is not a number."""
    if runtime_name not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime_name!r}; expected one of {', '.join(RUNTIMES)}")
    version = parse_version(runtime_version)
    if runtime_name != "ai-edge-litert":
        return version
    mapped = None
    for (major, minor), tf_version in LITERT_TO_TF:
        if (version[0], version[1]) >= (major, minor):
            mapped = tf_version
    if mapped is None:  # older than LiteRT 1.0 (0.x previews): treat as the TF of 1.0's time
        mapped = LITERT_TO_TF[0][1]
    return parse_version(mapped)


def min_runtime_for(op: str, version: int) -> str | None:
    """The first TF release whose runtime has ``op`` at ``version``; None when the table has no
    figure (op unknown to the table, or a version newer than its last entry)."""
    versions = MIN_RUNTIME.get(op)
    if versions is None or not 1 <= version <= len(versions):
        return None
    return versions[version - 1]


def check(model_path: str | Path, runtime_name: str, runtime_version: str) -> Compat:
    """Whether ``runtime_name`` at ``runtime_version`` loads (and can allocate) the model, or why not.

    Raises InputError when the model cannot be read, UsageError for an unknown runtime or version.
    """
    return check_info(read_model(model_path), runtime_name, runtime_version)


def check_info(info: ModelInfo, runtime_name: str, runtime_version: str) -> Compat:
    """:func:`check` for a model already read with :func:`~controller.model.reader.read_model`."""
    have = tf_equivalent(runtime_name, runtime_version)
    label = f"{runtime_name} {runtime_version}"
    refusals: list[str] = []
    warnings: list[str] = []
    required: Version | None = None

    for op in info.ops:
        if op.flex:
            if runtime_name != "tensorflow":
                refusals.append(
                    f"op {op.name} is a Select-TF (Flex) op, which {label} cannot run: run this model "
                    "with runtime 'tensorflow', or convert it again with builtin ops only"
                )
            continue
        if op.custom:
            if op.name not in STOCK_CUSTOM_OPS:
                refusals.append(
                    f"custom op {op.name!r} is not registered in a stock {runtime_name}: the load fails "
                    "with 'unresolved custom op'; build a runtime with the op registered, or convert "
                    "the model without it"
                )
            continue
        if op.name.startswith("UNKNOWN_"):
            refusals.append(
                f"builtin op code {op.builtin_code} (v{op.version}) is newer than any this edgebench "
                "knows; the runtime is almost certainly too old for it - upgrade the runtime"
            )
            continue
        figure = min_runtime_for(op.name, op.version)
        known = MIN_RUNTIME.get(op.name)
        if figure is None and known and op.version > len(known):
            last = max(parse_version(v) for v in known if v)
            if have <= last:
                refusals.append(
                    f"op {op.name} v{op.version} is newer than any version {label} has (its v{len(known)} "
                    f"came with {_fmt(last)}): upgrade the runtime, or convert with --compat-runtime "
                    f"{have[0]}.{have[1]}"
                )
            else:
                warnings.append(f"op {op.name} v{op.version} has no minimum-runtime figure; assumed "
                                f"supported by {label}")
            continue
        if figure is None and known:  # a version that was never released (BROADCAST_TO v1)
            refusals.append(f"op {op.name} v{op.version} was never part of a runtime release; convert "
                            "the model again with a released converter")
            continue
        if figure is None:
            warnings.append(f"op {op.name} v{op.version} has no minimum-runtime figure; not checked")
            continue
        need = parse_version(figure)
        required = need if required is None or need > required else required
        if have < need:
            refusals.append(
                f"op {op.name} v{op.version} needs a runtime of TF {figure} or newer; {label} "
                f"(= TF {_fmt(have)}) is older: convert with --compat-runtime {have[0]}.{have[1]} "
                "or upgrade the runtime"
            )

    for tensor in info.inputs:
        if any(d < 0 for d in tensor.shape_signature[1:]):
            warnings.append(
                f"input {tensor.name!r} has dynamic dimensions {tensor.shape_signature}: the job must "
                f"resize it (agent --input-shape {tensor.name}=d1,d2,...), the default shape "
                f"{tensor.shape} is a placeholder"
            )
    return Compat(
        ok=not refusals, reasons=refusals + warnings, warnings=warnings, runtime=runtime_name,
        runtime_version=str(runtime_version), tf_equivalent=_fmt(have),
        required=_fmt(required) if required else None,
    )
