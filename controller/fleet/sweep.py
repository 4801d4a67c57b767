"""What jobs one model becomes on one device: threads x XNNPACK on/off x batch sizes, and their ids.

A batch sweep applies to a model whose inputs have a dynamic first dimension (shape signature -1): each
such input is resized to ``[b, *its other dimensions]`` per batch size; a model without one is measured
once, at its own shape. XNNPACK is swept like threads (``--xnnpack on,off``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from controller.errors import InputError
from controller.fleet.models import ModelRef, model_info

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Setting:
    """One point of a model's sweep on a device."""

    threads: int
    xnnpack: bool = True
    batch: int | None = None  #: the batch size of a batch sweep (None: the model's own shape)
    input_shapes: dict = field(default_factory=dict)  #: the resize that batch size needs


def sweep(threads: Sequence[int], xnnpack: Sequence[bool], batch_sizes: Sequence[int],
          model: ModelRef) -> list[Setting]:
    """threads x XNNPACK x batch sizes. The batch sizes apply to a model whose inputs have a dynamic first
    dimension (shape signature -1): each such input is resized to ``[b, *its other dimensions]``; a model
    without one is measured once at its own shape."""
    dynamic = _dynamic_batch_inputs(model) if batch_sizes else {}
    batches: list = [(b, {name: [b, *rest] for name, rest in dynamic.items()}) for b in batch_sizes] if dynamic \
        else [(None, {})]
    return [Setting(t, x, b, shapes) for t in threads for x in dict.fromkeys(xnnpack) for b, shapes in batches]


def _dynamic_batch_inputs(model: ModelRef) -> dict[str, list[int]]:
    """Input name -> its dimensions after the first, for inputs whose first dimension is dynamic (-1)."""
    try:
        info = model_info(model.path, model.sha256)
    except InputError:
        return {}  # not a model: the preflight skips it with the reason
    found = {}
    for io in info.inputs:
        if io.shape_signature and io.shape_signature[0] == -1:
            found[io.name] = [max(1, d) for d in io.shape_signature[1:]]
    return found


def job_id(index: int, model: ModelRef, setting: Setting | int) -> str:
    """A file-name-safe, unique job id: ``<index>-<model>-<variant>-t<threads>[-noxnn][-b<batch>]``
    (a bare thread count stands for that many threads, XNNPACK on, the model's own shape)."""
    if isinstance(setting, int):
        setting = Setting(setting)
    slug = _SLUG.sub("_", f"{model.name}-{model.variant}")[:60]
    return (f"{index:03d}-{slug}-t{setting.threads}" + ("" if setting.xnnpack else "-noxnn")
            + (f"-b{setting.batch}" if setting.batch is not None else ""))


def input_suffix(path: str) -> str:
    """.npy or .npz: the suffix an input data file keeps on the device (numpy reads it by content)."""
    return ".npy" if path.endswith(".npy") else ".npz"


def input_names(model: ModelRef) -> set[str]:
    """The names of the model's inputs (empty when it cannot be read: the preflight skips it)."""
    try:
        return {io.name for io in model_info(model.path, model.sha256).inputs}
    except InputError:
        return set()


def check_input_shapes(shapes: dict, models: list[ModelRef]) -> None:
    """Raise UsageError when an ``--input-shape`` names an input that none of ``models`` has (a typo would
    otherwise resize nothing, silently)."""
    from controller.errors import UsageError

    if not shapes:
        return
    known = set().union(*(input_names(m) for m in models))
    unknown = sorted(set(shapes) - known)
    if unknown:
        raise UsageError(f"--input-shape names {unknown}, but no model has such an input (inputs: "
                         f"{sorted(known)})")
