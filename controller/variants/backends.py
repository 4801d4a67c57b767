"""The two ways a variant is made: TensorFlow's converter (SavedModel / Keras sources) and
ai-edge-quantizer (an fp32 .tflite source, without TensorFlow). Both answer the same questions: the fp32
bytes, a variant's bytes (with calibration batches for int8), and what made them."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from controller.errors import InputError, ToolError, UsageError
from controller.model import compat
from controller.model.reader import read_model, read_model_bytes
from controller.variants.calibration import SampleSet

if TYPE_CHECKING:  # annotations only: convert imports this module
    from controller.variants.convert import ConvertOptions

ProgressFn = Callable[[str, dict], None]


class Backend:
    def fp32(self) -> bytes:
        raise NotImplementedError

    def fp32_options(self) -> dict:
        raise NotImplementedError

    def variant(self, variant: str, calibration: SampleSet | None, say: ProgressFn) -> tuple[bytes, dict]:
        raise NotImplementedError

    def converter_record(self, variant: str) -> dict:
        raise NotImplementedError


def _calibration_batches(calibration: SampleSet, say: ProgressFn) -> Iterator[np.ndarray]:
    total = len(calibration)
    for i in range(total):
        yield calibration.x[i][None]
        say("calibrate", {"done": i + 1, "total": total})


class TFBackend(Backend):
    """The TensorFlow converter (tf.lite.TFLiteConverter)."""

    def __init__(self, src: Path, kind: str, options: ConvertOptions):
        self.src, self.kind, self.options = src, kind, options
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import tensorflow as tf
        except ImportError:
            raise ToolError(f"converting {src} needs TensorFlow: pip install 'edgebench[convert]' "
                            "(tensorflow-cpu)") from None
        self.tf = tf
        self.version = tf.__version__
        self.model = None
        if kind == "keras":
            try:
                import keras

                self.model = keras.models.load_model(str(src), compile=False)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise InputError(f"{src}: not a loadable Keras model ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}); save it with "
                                 "model.save('model.keras')") from None
        self.per_tensor_dense = bool(options.compat_runtime and
                                     compat.parse_version(options.compat_runtime) < (2, 17, 0))

    def _converter(self):
        tf = self.tf
        if self.kind == "keras":
            return tf.lite.TFLiteConverter.from_keras_model(self.model)
        return tf.lite.TFLiteConverter.from_saved_model(str(self.src))

    def _convert(self, converter, variant: str) -> bytes:
        try:
            return bytes(converter.convert())
        except Exception as exc:  # the converter raises many types (ConverterError, ValueError ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ToolError(f"the TensorFlow converter failed on the {variant} variant of {self.src}: "
                            f"{first}") from exc

    def fp32(self) -> bytes:
        return self._convert(self._converter(), "fp32")

    def fp32_options(self) -> dict:
        return {"optimizations": []}

    def variant(self, variant: str, calibration: SampleSet | None, say: ProgressFn) -> tuple[bytes, dict]:
        tf = self.tf
        converter = self._converter()
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        record: dict[str, Any] = {"optimizations": ["DEFAULT"]}
        if variant == "fp16":
            converter.target_spec.supported_types = [tf.float16]
            record["supported_types"] = ["float16"]
        if variant in ("dynamic", "int8") and self.per_tensor_dense:
            # Per-channel dense layers make FULLY_CONNECTED v12 (runtime 2.17+); per-tensor stays older.
            converter._experimental_disable_per_channel_quantization_for_dense_layers = True
            record["per_tensor_dense"] = True
        if variant == "int8":
            if calibration is None:
                raise UsageError("the int8 variant needs --calibration")
            converter.representative_dataset = lambda: ([b] for b in _calibration_batches(calibration, say))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[self.options.io]
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
            record.update(supported_ops=["TFLITE_BUILTINS_INT8"], io=self.options.io)
        if self.options.compat_runtime:
            record["compat_runtime"] = self.options.compat_runtime
        return self._convert(converter, variant), record

    def converter_record(self, variant: str) -> dict:
        return {"name": "tensorflow", "version": self.version}


def _fp16_recipe() -> list:
    return [{
        "regex": ".*", "operation": "*", "algorithm_key": "float_casting",
        "op_config": {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                      "compute_precision": "FLOAT", "explicit_dequantize": True},
    }]


class QuantizerBackend(Backend):
    """ai-edge-quantizer on an fp32 .tflite (no TensorFlow)."""

    def __init__(self, src: Path, options: ConvertOptions):
        self.src, self.options = src, options
        try:
            from ai_edge_quantizer import quantizer, recipe
        except ImportError:
            raise ToolError(f"quantizing {src} needs ai-edge-quantizer: pip install 'edgebench[quantize]'") \
                from None
        self.quantizer, self.recipe = quantizer, recipe
        from importlib.metadata import PackageNotFoundError, version

        try:
            self.version = version("ai-edge-quantizer")
        except PackageNotFoundError:
            self.version = "unknown"
        self.data = src.read_bytes()

    def fp32(self) -> bytes:
        read_model(self.src)  # a clear InputError for a file that is not a model
        return self.data

    def fp32_options(self) -> dict:
        return {"copied_from": str(self.src)}

    def variant(self, variant: str, calibration: SampleSet | None, say: ProgressFn) -> tuple[bytes, dict]:
        recipes = {"fp16": (_fp16_recipe, "float_casting fp16 weights"),
                   "dynamic": (self.recipe.dynamic_wi8_afp32, "dynamic_wi8_afp32"),
                   "int8": (self.recipe.static_wi8_ai8, "static_wi8_ai8")}
        make, label = recipes[variant]
        try:
            with warnings.catch_warnings():
                # The calibrator turns on experimental_preserve_all_tensors and says so; that is expected.
                warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
                q = self.quantizer.Quantizer(bytearray(self.data), make())
                result_cal = None
                if q.need_calibration:
                    if calibration is None:
                        raise UsageError("the int8 variant needs --calibration")
                    info = read_model_bytes(self.data, str(self.src))
                    sig = info.signature_defs[0] if info.signature_defs else None
                    if sig is None or len(sig.inputs) != 1:
                        raise InputError(f"{self.src}: int8 via ai-edge-quantizer needs a model with a "
                                         "signature of one input; convert from the Keras/SavedModel source")
                    input_name = next(iter(sig.inputs))
                    samples = [{input_name: b} for b in _calibration_batches(calibration, say)]
                    result_cal = q.calibrate({sig.key: samples})
                data = bytes(q.quantize(result_cal, enable_progress_report=False).quantized_model)
        except (InputError, UsageError):
            raise
        except Exception as exc:  # the quantizer raises ValueError/RuntimeError/KeyError ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ToolError(f"ai-edge-quantizer failed on the {variant} variant of {self.src}: {first}") \
                from exc
        return data, {"recipe": label}

    def converter_record(self, variant: str) -> dict:
        if variant == "fp32":
            return {"name": "copy", "version": None}
        return {"name": "ai-edge-quantizer", "version": self.version}

