"""Sample data for ``edgebench convert``: calibration sets and labelled eval sets, checked against the
model's input before any converter runs.

Calibration (``--calibration``): a ``.npy`` array, a ``.npz`` with key ``x``, or a folder of images
(resized to the input's height and width; Pillow or TensorFlow decodes them), N samples along the first
axis; or the word ``random`` (seeded uniform [0, 1) data: the int8 ranges are then meaningless, and the
manifest says so). Eval (``--eval``): a ``.npz`` with ``x`` (float32, N x input shape) and optional ``y``
(N integer labels). Every mismatch is an :class:`~controller.errors.InputError` naming the file, what
the model needs and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.errors import InputError, ToolError
from controller.model.reader import TensorInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
RANDOM = "random"


@dataclass
class SampleSet:
    """Float32 samples shaped like the model input without its batch axis: ``x[i][None]`` is one
    input. ``source`` says where they came from (a path or "random")."""

    x: np.ndarray
    source: str
    random: bool = False
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def calibration_record(self) -> dict:
        """The manifest's ``calibration`` entry."""
        record = {"source": self.source, "samples": len(self), "random": self.random}
        if self.random:
            record["distribution"] = "uniform[0,1)"
        return record


def single_input(inputs: list[TensorInfo], what: str) -> TensorInfo:
    """The model's only input. Raises InputError when it has several (``what`` names the option)."""
    if len(inputs) != 1:
        names = ", ".join(t.name for t in inputs)
        raise InputError(f"{what} supports models with one input; this model has {len(inputs)} ({names})")
    return inputs[0]


def sample_shape(tensor: TensorInfo) -> tuple[int, ...]:
    """The shape of one sample (the input shape without its batch axis)."""
    return tuple(int(d) for d in tensor.shape[1:])


def random_calibration(tensor: TensorInfo, count: int, seed: int) -> SampleSet:
    """``count`` seeded uniform [0, 1) samples for ``tensor``."""
    rng = np.random.default_rng(seed)
    x = rng.random((count, *sample_shape(tensor)), dtype=np.float32)
    return SampleSet(x=x, source=RANDOM, random=True)


def load_calibration(path: str | Path, tensor: TensorInfo, limit: int, seed: int) -> SampleSet:
    """Load up to ``limit`` calibration samples for ``tensor`` (a seeded subset when there are more).

    Raises InputError when the file is missing, of an unknown kind, empty, of the wrong shape, or holds
    non-finite values; ToolError when a folder of images needs a decoder that is not installed.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"calibration data {p}: no such file or folder; give a .npy, a .npz with key "
                         "'x', a folder of images, or 'random'")
    if p.is_dir():
        x = _load_images(p, tensor)
    else:
        x = _load_array(p, "calibration data")
    x = _conform(p, x, tensor, "calibration data")
    if len(x) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(x), size=limit, replace=False))
        x = x[pick]
    return SampleSet(x=x, source=str(p))


def load_eval(path: str | Path, tensor: TensorInfo, classes: int | None) -> SampleSet:
    """Load a labelled eval set (.npz: ``x``, optional ``y``) for ``tensor``.

    ``classes`` is the size of the model's first output (labels must be in ``0 .. classes-1``).
    Raises InputError naming the file when x is missing or misshapen, or y does not match x or the
    model's classes.
    """
    p = Path(path)
    if p.suffix != ".npz":
        raise InputError(f"eval data {p}: must be a .npz with 'x' (N x input shape) and optional 'y' "
                         "(N integer labels)")
    if not p.is_file():
        raise InputError(f"eval data {p}: no such file")
    with _open_npz(p, "eval data") as data:
        if "x" not in data.files:
            raise InputError(f"eval data {p}: no key 'x' (found {sorted(data.files)}); save it with "
                             "np.savez(path, x=inputs, y=labels)")
        x = np.asarray(data["x"])
        y = np.asarray(data["y"]) if "y" in data.files else None
    x = _conform(p, x, tensor, "eval data")
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise InputError(f"eval data {p}: labels 'y' have shape {list(y.shape)} but 'x' has {len(x)} "
                             f"samples; 'y' must be {len(x)} integer labels, one per sample")
        if not np.issubdtype(y.dtype, np.integer):
            if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
                y = y.astype(np.int64)
            else:
                raise InputError(f"eval data {p}: labels 'y' are {y.dtype}, not integer class indices")
        if classes is not None and len(y) and (y.min() < 0 or y.max() >= classes):
            raise InputError(f"eval data {p}: labels 'y' range {int(y.min())}..{int(y.max())}, but the "
                             f"model's output has {classes} classes (0..{classes - 1}); are these the "
                             "labels of this model?")
    return SampleSet(x=x, source=str(p), y=y)


def _open_npz(p: Path, what: str):
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{what} {p}: not a readable .npz/.npy file ({exc})") from None


def _load_array(p: Path, what: str) -> np.ndarray:
    if p.suffix == ".npy":
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{what} {p}: not a readable .npy file ({exc})") from None
    if p.suffix == ".npz":
        with _open_npz(p, what) as data:
            if "x" not in data.files:
                raise InputError(f"{what} {p}: no key 'x' (found {sorted(data.files)}); save the samples "
                                 "with np.savez(path, x=samples)")
            return np.asarray(data["x"])
    raise InputError(f"{what} {p}: unknown kind of file; give a .npy, a .npz with key 'x', or a folder "
                     "of images")


def _conform(p: Path, x: np.ndarray, tensor: TensorInfo, what: str) -> np.ndarray:
    """Check N x sample shape (a leading batch axis of 1 per sample is accepted) and return float32."""
    want = sample_shape(tensor)
    if x.ndim == len(want) + 2 and x.shape[1] == 1:  # N x 1 x sample: one batch of 1 per sample
        x = x[:, 0]
    if x.ndim == 0 or len(x) == 0:
        raise InputError(f"{what} {p}: holds no samples")
    dynamic = [i for i, d in enumerate(tensor.shape_signature[1:]) if d < 0]
    got = tuple(x.shape[1:])
    if len(got) != len(want) or any(g != w for i, (g, w) in enumerate(zip(got, want)) if i not in dynamic):
        raise InputError(
            f"{what} {p}: samples have shape {list(got)} (array {list(x.shape)}), but the model input "
            f"{tensor.name!r} takes {list(tensor.shape)}: store N samples as an array of shape "
            f"[N, {', '.join(str(d) for d in want)}]"
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InputError(f"{what} {p}: values are {x.dtype}; give real numbers")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what} {p}: holds NaN or infinite values")
    return x


def _load_images(folder: Path, tensor: TensorInfo) -> np.ndarray:
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"calibration data {folder}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    shape = sample_shape(tensor)
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise InputError(f"calibration data {folder}: a folder of images fits an input of shape "
                         f"[1, H, W, 1 or 3]; the model input {tensor.name!r} is {list(tensor.shape)}")
    height, width, channels = shape
    decode = _image_decoder()
    images = [decode(f, height, width, channels) for f in files]
    return np.stack(images).astype(np.float32)


def _image_decoder():
    """A function (path, h, w, c) -> float32 [h, w, c] in [0, 1], from Pillow or else TensorFlow."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        def with_pil(path: Path, h: int, w: int, c: int) -> np.ndarray:
            try:
                img = Image.open(path).convert("L" if c == 1 else "RGB").resize((w, h))
            except OSError as exc:
                raise InputError(f"calibration image {path}: cannot decode it ({exc})") from None
            arr = np.asarray(img, dtype=np.float32) / 255.0
            return arr.reshape(h, w, c)
        return with_pil
    try:
        import tensorflow as tf
    except ImportError:
        raise ToolError("a folder of calibration images needs Pillow or TensorFlow to decode them: "
                        "pip install pillow (or give a .npy/.npz instead)") from None

    def with_tf(path: Path, h: int, w: int, c: int) -> np.ndarray:
        try:
            img = tf.io.decode_image(tf.io.read_file(str(path)), channels=c, expand_animations=False)
        except (tf.errors.InvalidArgumentError, ValueError) as exc:
            raise InputError(f"calibration image {path}: cannot decode it ({exc})") from None
        img = tf.image.resize(tf.cast(img, tf.float32) / 255.0, (h, w))
        return img.numpy()
    return with_tf
