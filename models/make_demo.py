"""Make the demo model family: ``python -m models.make_demo models/demo`` (``make models``).

A small CNN trained for real on scikit-learn's digits data set (1797 labelled 8x8 images, shipped inside
the scikit-learn wheel: nothing is downloaded). Images are upsampled to 32x32 (bilinear) so the network
does enough work to time (~1 ms per fp32 inference on a 2-core x86 box). 360 images, stratified and
held out from training, are the labelled eval set. The trained Keras model is kept as ``demo.keras``;
``edgebench convert`` then makes the four variants (calibrated on 200 training images, built for
tflite-runtime 2.14 so they load in both runtimes) and runs the accuracy table.

Deterministic: seeded split, seeded weights, TensorFlow op determinism, one thread.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

SEED = 0
SIZE = 32  #: the model's input is SIZE x SIZE x 1
EVAL_SAMPLES = 360
CALIBRATION_SAMPLES = 200
EPOCHS = 12

log = logging.getLogger("edgebench.demo_models")


def digits_32() -> tuple[np.ndarray, np.ndarray]:
    """The digits images upsampled to SIZE x SIZE x 1, float32 in [0, 1], and their labels."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    big = np.stack([zoom(img, SIZE / 8, order=1) for img in images]).clip(0.0, 1.0)
    return big[..., None].astype(np.float32), digits.target.astype(np.int64)


def split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded split: (x_train, y_train, x_eval, y_eval) with EVAL_SAMPLES held out."""
    from sklearn.model_selection import train_test_split

    x_train, x_eval, y_train, y_eval = train_test_split(x, y, test_size=EVAL_SAMPLES, random_state=SEED,
                                                        stratify=y)
    return x_train, y_train, x_eval, y_eval


def build_model():
    """conv32-conv32-pool-conv64-conv64-pool-conv64-pool-dense64-dense10 on 32x32x1."""
    import keras
    from keras import layers

    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def train(x_train: np.ndarray, y_train: np.ndarray):
    """Train the CNN (seeded, deterministic); return the model without its optimizer state."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=EPOCHS, shuffle=True, verbose=2)
    plain = build_model()  # same graph, no optimizer: a smaller .keras file
    plain.set_weights(model.get_weights())
    return plain


def make(out: Path) -> int:
    """Write demo.keras, demo.{fp32,fp16,dynamic,int8}.tflite, demo.eval.npz, manifest.json and
    accuracy.json into ``out``; return the exit code of the conversion (0 ok)."""
    from controller.variants.convert import ConvertOptions, convert
    from controller.variants.view import variants_table

    out.mkdir(parents=True, exist_ok=True)
    x, y = digits_32()
    x_train, y_train, x_eval, y_eval = split(x, y)
    log.info("training on %d digits (%d held out for eval), %d epochs", len(x_train), len(x_eval), EPOCHS)
    model = train(x_train, y_train)
    keras_path = out / "demo.keras"
    model.save(keras_path)
    log.info("converting %s into the four variants", keras_path)
    with tempfile.TemporaryDirectory(prefix="edgebench-demo-") as tmp:
        rng = np.random.default_rng(SEED)
        pick = rng.choice(len(x_train), size=CALIBRATION_SAMPLES, replace=False)
        calibration = Path(tmp) / "calibration.npy"
        np.save(calibration, x_train[np.sort(pick)])
        eval_file = Path(tmp) / "eval.npz"
        np.savez_compressed(eval_file, x=x_eval, y=y_eval)
        result = convert(ConvertOptions(
            src=keras_path, out=out, name="demo", calibration=str(calibration),
            calibration_samples=CALIBRATION_SAMPLES, io="int8", compat_runtime="2.14", eval=eval_file,
            seed=SEED, force=True,  # this folder is demo_models' own: `make demo` again replaces it
        ))
    # The calibration file was a temporary one: record what it was instead of its vanished path.
    from controller.variants import manifest as mf

    family = mf.load(out)
    family.variants["int8"].calibration["source"] = (f"{CALIBRATION_SAMPLES} training images of "
                                                     "sklearn digits (models/make_demo.py)")
    mf.write(family)
    from rich.console import Console

    console = Console()
    for renderable in variants_table(result):
        console.print(renderable)
    return 1 if result.compat_failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.make_demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder (models/demo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return make(args.out)


if __name__ == "__main__":
    sys.exit(main())
