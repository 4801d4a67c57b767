"""Input data for a job: seeded random values, or samples from a .npy / .npz file.

Samples are kept as one array per model input with a leading sample axis (``Samples.arrays[j][i]`` is
input ``j`` of sample ``i``). Float data for a quantized int8/uint8 input is quantized with the input's
(scale, zero_point); data already in the input's dtype is used as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.errors import JobFailed
from agent.regular_file import check_regular
from agent.tensors import RANDOM_RANGES, is_quantized, quantize

# Keys of an eval-set .npz (docs/internals.md) that are not model inputs.
_LABEL_KEYS = ("y", "labels")


@dataclass
class Samples:
    arrays: list  #: one np.ndarray per model input, shape (count, *input shape), the input's dtype
    count: int
    source: str  #: "random(seed=N)" or the file path
    stacked: bool = False  #: the file held N samples along a new first axis (outputs are stacked too)

    def sample(self, i: int) -> list:
        return [array[i] for array in self.arrays]


def random_samples(ios: list[dict], seed: int) -> Samples:
    """One seeded random sample per input, inside the dtype's range of :data:`RANDOM_RANGES`.

    Raises JobFailed(kind="bad_inputs") for a dtype the agent cannot make values of (e.g. string).
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for io in ios:
        dtype = np.dtype(io["dtype"])
        if dtype.name not in RANDOM_RANGES:
            raise JobFailed("bad_inputs", f"input {io['name']!r} has dtype {dtype.name}, for which the agent "
                            "makes no random values; pass --inputs FILE.npz with data for it")
        low, high = RANDOM_RANGES[dtype.name]
        shape = [1, *io["shape"]]
        if dtype.kind == "f":
            values = rng.uniform(low, high, shape).astype(dtype)
        elif dtype.kind == "b":
            values = rng.integers(0, 2, shape).astype(bool)
        else:
            values = rng.integers(low, high, shape, endpoint=True).astype(dtype)
        arrays.append(values)
    return Samples(arrays, 1, f"random(seed={seed})")


def load_samples(path: str, ios: list[dict]) -> Samples:
    """Samples for ``ios`` from a .npy (single-input models) or .npz file (arrays named after the inputs;
    for a single-input model also ``x`` or the only non-label array).

    Each array is one sample shaped like the input, or N samples along a new first axis (a leading 1 of
    the input's shape may be left out: N x 8 x 8 x 1 feeds an input of [1, 8, 8, 1]). Raises
    JobFailed(kind="bad_inputs") naming the file, the input and what was expected.
    """
    try:
        check_regular(path)  # a FIFO or /dev/zero would block or read forever in np.load
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
        raise JobFailed("bad_inputs", f"cannot read inputs file {path}: {exc}; give a .npy or .npz "
                        "written by numpy") from exc
    if isinstance(loaded, np.ndarray):
        if len(ios) != 1:
            raise JobFailed("bad_inputs", f"{path} is a .npy with one array but the model has {len(ios)} "
                            f"inputs {[io['name'] for io in ios]}; use a .npz with one array per input name")
        raw = [loaded]
    else:
        with loaded:
            raw = _match_npz(path, {key: loaded[key] for key in loaded.files}, ios)
    arrays = [_conform(path, array, io) for array, io in zip(raw, ios)]
    stacked = any(array.shape != tuple(io["shape"]) for array, io in zip(raw, ios))
    counts = {len(array) for array in arrays}
    if len(counts) != 1:
        raise JobFailed("bad_inputs", f"{path}: the inputs hold different sample counts "
                        f"{dict(zip([io['name'] for io in ios], [len(a) for a in arrays]))}")
    count = counts.pop()
    if count == 0:
        raise JobFailed("bad_inputs", f"{path} holds zero samples")
    return Samples(arrays, count, str(Path(path)), stacked)


def _match_npz(path: str, found: dict, ios: list[dict]) -> list:
    names = [io["name"] for io in ios]
    if all(name in found for name in names):
        return [found[name] for name in names]
    if len(ios) == 1:
        candidates = [key for key in found if key not in _LABEL_KEYS]
        if "x" in found:
            return [found["x"]]
        if len(candidates) == 1:
            return [found[candidates[0]]]
    missing = [name for name in names if name not in found]
    raise JobFailed("bad_inputs", f"{path} holds arrays {sorted(found)} but the model's inputs are {names} "
                    f"(missing {missing}); name the arrays after the inputs")


def _conform(path: str, array: np.ndarray, io: dict) -> np.ndarray:
    """Shape ``array`` to (N, *shape) and convert it to the input's dtype."""
    shape = tuple(io["shape"])
    if array.shape == shape:
        batched = array[None]
    elif array.shape[1:] == shape:
        batched = array
    elif shape and shape[0] == 1 and array.shape[1:] == shape[1:]:
        batched = array[:, None]
    else:
        raise JobFailed("bad_inputs", f"{path}: array for input {io['name']!r} has shape {list(array.shape)}; "
                        f"the input takes {list(shape)} (one sample) or N x {list(shape)}; resize dynamic "
                        "inputs with --input-shape NAME=d1,d2,...")
    dtype = np.dtype(io["dtype"])
    if batched.dtype == dtype:
        return batched
    if is_quantized(io) and batched.dtype.kind in "fiu":
        return quantize(batched, io["scale"], io["zero_point"], dtype)
    if dtype.kind == "f" and batched.dtype.kind in "fiub":
        return batched.astype(dtype)
    if dtype.kind in "iub" and batched.dtype.kind in "fiub":
        converted = batched.astype(dtype)
        if not np.array_equal(converted.astype(np.float64), batched.astype(np.float64)):
            raise JobFailed("bad_inputs", f"{path}: values for input {io['name']!r} ({batched.dtype}) do not "
                            f"fit its dtype {dtype.name} exactly; give integer data in range")
        return converted
    raise JobFailed("bad_inputs", f"{path}: array for input {io['name']!r} has dtype {batched.dtype}, the "
                    f"input takes {dtype.name}")
