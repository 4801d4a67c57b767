"""Per-layer error between two variants of a model (``edgebench inspect --compare A B --inputs DATA``).

Both models run on the same inputs in this process with ``experimental_preserve_all_tensors=True``, so
every intermediate tensor can be read after ``invoke``. Tensors are matched by name; quantized values
are dequantized (per tensor or per channel) before comparing. Constant tensors (weights) are not
compared. What could not be matched is reported, never silently dropped: a name only one model has,
or the same name with different shapes.

The runtime comes from the agent's discovery (:mod:`agent.runtimes`, "auto" order).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from controller.errors import InputError, ToolError
from controller.model.reader import read_model
from controller.variants.calibration import load_calibration
from controller.variants.scoring import Drift


@dataclass
class TensorDiff:
    name: str
    shape: list[int]
    dtype_a: str
    dtype_b: str
    cosine: float
    max_abs: float
    rmse: float
    rel_rmse: float  #: rmse / RMS of A's values: comparable across layers of different magnitude


@dataclass
class LayerComparison:
    model_a: str
    model_b: str
    runtime: str
    samples: int
    diffs: list[TensorDiff]  #: largest rel_rmse first
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)  #: "name: [a shape] vs [b shape]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_a": self.model_a, "model_b": self.model_b, "runtime": self.runtime,
            "samples": self.samples, "matched": len(self.diffs),
            "tensors": [d.__dict__ for d in self.diffs], "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b, "shape_mismatch": self.shape_mismatch,
        }


def _interpreter(path: Path) -> tuple[Any, str]:
    from agent.errors import AgentError
    from agent.runtimes import choose, load

    try:
        runtime = load(choose("auto"))
    except AgentError as exc:
        raise ToolError(f"inspect --compare needs a TFLite runtime on this machine: {exc}") from exc
    try:
        with warnings.catch_warnings():
            # The runtime warns that preserving all tensors costs memory: that is the point here.
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
            interpreter = runtime.interpreter_class(model_path=str(path),
                                                    experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: {runtime.spec.name} cannot load it ({str(exc).splitlines()[0]}); check "
                         f"'edgebench inspect {path}'") from exc
    return interpreter, f"{runtime.spec.name} {runtime.version}"


def _real(value: np.ndarray, detail: dict) -> np.ndarray:
    """Dequantize an integer tensor with a scale (per tensor or per channel); floats as float64."""
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), dtype=np.float64)
    if value.dtype.kind not in "iu" or not len(scales):
        return value.astype(np.float64)
    zero_points = np.asarray(params.get("zero_points", []), dtype=np.float64)
    if not len(zero_points):
        zero_points = np.zeros_like(scales)
    if len(scales) == 1:
        return (value.astype(np.float64) - zero_points[0]) * scales[0]
    axis = int(params.get("quantized_dimension", 0))
    shape = [1] * value.ndim
    shape[axis] = len(scales)
    return (value.astype(np.float64) - zero_points.reshape(shape)) * scales.reshape(shape)


def _feed(interpreter: Any, sample: np.ndarray) -> None:
    from agent.tensors import quantize

    detail = interpreter.get_input_details()[0]
    dtype = np.dtype(detail["dtype"])
    x = sample[None].astype(np.float32)
    if dtype.kind in "iu":
        scale, zero_point = detail["quantization"]
        if not scale:
            raise InputError(f"input {detail['name']!r} is {dtype} without a scale: float inputs cannot be "
                             "mapped to it")
        x = quantize(x, scale, zero_point, dtype)
    interpreter.set_tensor(detail["index"], x.astype(dtype))


def _activations(interpreter: Any, constants: set[str]) -> dict[str, tuple[dict, np.ndarray]]:
    out = {}
    for detail in interpreter.get_tensor_details():
        name = detail["name"]
        if not name or name in constants or name in out:
            continue
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:  # a tensor without data (e.g. an unused scratch buffer): nothing to compare
            continue
        out[name] = (detail, _real(np.asarray(value), detail))
    return out


def compare_layers(model_a: str | Path, model_b: str | Path, inputs: str | Path,
                   max_samples: int = 16, seed: int = 0) -> LayerComparison:
    """Run A and B on up to ``max_samples`` samples of ``inputs`` (.npy, or .npz with key ``x``, float
    data shaped like A's input) and compare every activation tensor both have, by name.

    Raises InputError for unreadable models, models with several inputs or inputs of the wrong shape;
    ToolError when no runtime is installed.
    """
    a_path, b_path = Path(model_a), Path(model_b)
    info_a, info_b = read_model(a_path), read_model(b_path)
    for info in (info_a, info_b):
        if len(info.inputs) != 1:
            raise InputError(f"{info.path}: inspect --compare handles models with one input; it has "
                             f"{len(info.inputs)}")
    if info_a.inputs[0].shape != info_b.inputs[0].shape:
        raise InputError(f"{a_path} takes {info_a.inputs[0].shape} but {b_path} takes "
                         f"{info_b.inputs[0].shape}: compare two variants of the same model")
    data = load_calibration(inputs, info_a.inputs[0], max_samples, seed).x
    interp_a, runtime = _interpreter(a_path)
    interp_b, _ = _interpreter(b_path)
    const_a = {t.name for t in info_a.tensors if t.constant}
    const_b = {t.name for t in info_b.tensors if t.constant}
    sums: dict[str, dict[str, Any]] = {}
    only_a: set[str] = set()
    only_b: set[str] = set()
    mismatch: dict[str, str] = {}
    for sample in data:  # bounded by max_samples
        _feed(interp_a, sample)
        _feed(interp_b, sample)
        interp_a.invoke()
        interp_b.invoke()
        acts_a, acts_b = _activations(interp_a, const_a), _activations(interp_b, const_b)
        only_a |= set(acts_a) - set(acts_b)
        only_b |= set(acts_b) - set(acts_a)
        for name in set(acts_a) & set(acts_b):
            (da, va), (db, vb) = acts_a[name], acts_b[name]
            if va.shape != vb.shape:
                mismatch[name] = f"{name}: {list(va.shape)} vs {list(vb.shape)}"
                continue
            acc = sums.setdefault(name, {"shape": list(va.shape), "dtype_a": np.dtype(da["dtype"]).name,
                                         "dtype_b": np.dtype(db["dtype"]).name, "drift": Drift()})
            acc["drift"].add(va.reshape(1, -1), vb.reshape(1, -1))  # one sample at a time
    diffs = []
    for name, acc in sums.items():
        if name in mismatch:
            continue
        m = acc["drift"].result()
        diffs.append(TensorDiff(name=name, shape=acc["shape"], dtype_a=acc["dtype_a"], dtype_b=acc["dtype_b"],
                                cosine=m["cosine"], max_abs=m["max_abs"], rmse=m["rmse"], rel_rmse=m["rel_rmse"]))
    diffs.sort(key=lambda d: (-d.rel_rmse, d.name))
    return LayerComparison(model_a=str(a_path), model_b=str(b_path), runtime=runtime, samples=len(data),
                           diffs=diffs, only_in_a=sorted(only_a), only_in_b=sorted(only_b),
                           shape_mismatch=sorted(mismatch.values()))
