"""Tensor values: affine (de)quantization and the description of a model's inputs and outputs.

``quantize`` / ``dequantize`` are the one implementation of TFLite's affine quantization
(``real = scale * (q - zero_point)``); the controller reuses them for eval data and outputs.
numpy is imported here, so only the worker (and the controller) import this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# dtype name -> (low, high) of the values random inputs take ("sensible": ids for gathers are small and
# non-negative, floats are unit-scale).
RANDOM_RANGES = {
    "float32": (-1.0, 1.0),
    "float16": (-1.0, 1.0),
    "float64": (-1.0, 1.0),
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-1000, 1000),
    "int32": (0, 100),
    "int64": (0, 100),
    "bool": (0, 1),
}


def quantize(x: Any, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """Quantize real values: ``round(x / scale) + zero_point``, clipped to ``dtype``'s range.

    Rounds half away from zero like TFLite's reference kernels. Raises ValueError when ``scale`` is
    not a positive number or ``dtype`` is not an integer type.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu":
        raise ValueError(f"quantize needs an integer dtype, got {dtype}")
    if not scale or scale <= 0 or not np.isfinite(scale):
        raise ValueError(f"quantize needs a positive scale, got {scale}")
    info = np.iinfo(dtype)
    scaled = np.asarray(x, dtype=np.float64) / scale
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(rounded + zero_point, info.min, info.max).astype(dtype)


def dequantize(raw: Any, scale: float, zero_point: int) -> np.ndarray:
    """Real values of quantized ``raw`` as float32: ``scale * (raw - zero_point)``."""
    return (np.float32(scale) * (np.asarray(raw).astype(np.float32) - np.float32(zero_point))).astype(
        np.float32)


def quantization_of(detail: dict) -> tuple:
    """(scale, zero_point) of an interpreter tensor detail, or (None, None) when not quantized.

    Per-axis quantized tensors (several scales) report their first scale and zero point.
    """
    params = detail.get("quantization_parameters") or {}
    scales = params.get("scales")
    zero_points = params.get("zero_points")
    if scales is not None and len(scales):
        return float(scales[0]), int(zero_points[0]) if len(zero_points) else 0
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if scale:
        return float(scale), int(zero_point)
    return None, None


def dtype_name(dtype: Any) -> str:
    """numpy dtype -> "float32", "int8", "bool" ..."""
    return np.dtype(dtype).name


def describe(detail: dict) -> dict:
    """The result document's io entry for an interpreter tensor detail."""
    scale, zero_point = quantization_of(detail)
    signature = detail.get("shape_signature")
    return {
        "name": detail["name"],
        "index": int(detail["index"]),
        "shape": [int(d) for d in detail["shape"]],
        "shape_signature": [int(d) for d in (signature if signature is not None else detail["shape"])],
        "dtype": dtype_name(detail["dtype"]),
        "scale": scale,
        "zero_point": zero_point,
    }


def is_quantized(io: dict) -> bool:
    """True for an integer tensor with a scale (its values stand for reals)."""
    return io["scale"] is not None and np.dtype(io["dtype"]).kind in "iu"


def real_values(raw: np.ndarray, io: dict) -> np.ndarray:
    """Output values for people: dequantized float32 when ``io`` is quantized, else ``raw`` itself."""
    if is_quantized(io):
        return dequantize(raw, io["scale"], io["zero_point"])
    return raw
