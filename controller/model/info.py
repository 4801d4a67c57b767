"""What the reader finds in a .tflite file, as plain values: :class:`ModelInfo` with its tensors
(:class:`TensorInfo`, with the (scale, zero_point) <-> (mean, std_dev) arithmetic), operator codes,
subgraphs, weight statistics and signatures. Made by :func:`controller.model.reader.read_model`."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "uint16": (0, 65535),
               "int32": (-2**31, 2**31 - 1), "int4": (-8, 7), "uint4": (0, 15)}
CUSTOM_CODE = 32  # BuiltinOperator.CUSTOM: the op is named by OperatorCode.custom_code
FLEX_PREFIX = "Flex"  # custom codes of Select-TF ops ("FlexErf", ...): need the TensorFlow runtime



@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a subgraph. ``scale``/``zero_point`` are the per-tensor quantization (None when
    the tensor is not quantized); per-channel tensors also list ``scales``/``zero_points``."""

    name: str
    index: int
    shape: list[int]
    shape_signature: list[int]  #: -1 marks a dimension that is dynamic (resizable)
    dtype: str
    scale: float | None = None
    zero_point: int | None = None
    scales: list[float] = field(default_factory=list)
    zero_points: list[int] = field(default_factory=list)
    quantized_dimension: int = 0
    buffer: int = 0
    sparse: bool = False
    constant: bool = False  #: has data in the file (a weight), as opposed to an activation

    @property
    def is_dynamic(self) -> bool:
        """True when a dimension of the shape signature is unknown (-1)."""
        return any(d < 0 for d in self.shape_signature)

    def quantized_range(self) -> tuple[int, int] | None:
        """(qmin, qmax) of an integer tensor with a per-tensor scale; None otherwise."""
        if self.scale is None or self.dtype not in _INT_RANGES:
            return None
        return _INT_RANGES[self.dtype]

    def mean_std(self) -> tuple[float, float] | None:
        """The converter's old (mean, std_dev) input convention for this quantization:
        ``real = (q - mean) / std_dev``, so mean = zero_point and std_dev = 1 / scale."""
        if self.quantized_range() is None or not self.scale:
            return None
        return float(self.zero_point or 0), 1.0 / self.scale

    def float_range(self) -> tuple[float, float] | None:
        """The real values the quantized range covers: ((qmin - zp) x scale, (qmax - zp) x scale)."""
        q = self.quantized_range()
        if q is None:
            return None
        zp = self.zero_point or 0
        return (q[0] - zp) * self.scale, (q[1] - zp) * self.scale

    def io_dict(self) -> dict[str, Any]:
        """The I/O record of docs/internals.md: name, index, shape, shape_signature, dtype, scale,
        zero_point."""
        return {
            "name": self.name, "index": self.index, "shape": list(self.shape),
            "shape_signature": list(self.shape_signature), "dtype": self.dtype,
            "scale": self.scale, "zero_point": self.zero_point,
        }


@dataclass(frozen=True)
class OpCode:
    """One entry of the model's operator-code table."""

    name: str  #: builtin name ("CONV_2D") or, for custom ops, the custom code ("FlexErf", "MyOp")
    builtin_code: int
    version: int
    custom_code: str | None = None

    @property
    def is_custom(self) -> bool:
        return self.builtin_code == CUSTOM_CODE

    @property
    def is_flex(self) -> bool:
        return self.is_custom and (self.custom_code or "").startswith(FLEX_PREFIX)


@dataclass(frozen=True)
class OpUse:
    """An operator code and how many operators of all subgraphs use it."""

    name: str
    version: int
    count: int
    builtin_code: int
    custom: bool = False
    flex: bool = False


@dataclass(frozen=True)
class OperatorInfo:
    """One operator of the main subgraph: its op name and tensor indices (-1 = optional, absent)."""

    name: str
    version: int
    inputs: list[int]
    outputs: list[int]


@dataclass(frozen=True)
class SubgraphInfo:
    name: str
    tensors: int
    operators: int
    inputs: list[int]
    outputs: list[int]


@dataclass(frozen=True)
class WeightStats:
    """Constant tensors (those with a data buffer) of one dtype."""

    dtype: str
    tensors: int
    bytes: int


@dataclass(frozen=True)
class Signature:
    """A SignatureDef: its key and the names it gives to tensors (name -> tensor index)."""

    key: str
    subgraph: int
    inputs: dict[str, int]
    outputs: dict[str, int]


@dataclass
class ModelInfo:
    """What :func:`read_model` found in a .tflite file."""

    path: str
    bytes: int
    sha256: str
    schema_version: int
    description: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    subgraphs: list[SubgraphInfo]
    operator_codes: list[OpCode]
    ops: list[OpUse]  #: every operator code used, with its use count, in table order
    weights: list[WeightStats]
    sparse_tensors: list[str]
    min_runtime_version: str | None
    metadata: dict[str, int]  #: metadata entry name -> buffer index
    signature_defs: list[Signature]
    tensors: list[TensorInfo]  #: all tensors of the main subgraph (for per-layer comparison)
    operators: list[OperatorInfo] = field(default_factory=list)  #: of the main subgraph, in order

    def float_compute_ops(self) -> list[str]:
        """Names of main-subgraph ops that compute on float activations (a float32/float16 input that
        is not a weight), leaving out DEQUANTIZE/QUANTIZE and shape bookkeeping. A full-integer model
        has none."""
        bookkeeping = {"DEQUANTIZE", "QUANTIZE", "SHAPE", "RANK"}
        found = []
        for op in self.operators:
            if op.name in bookkeeping:
                continue
            if any(0 <= i < len(self.tensors) and self.tensors[i].dtype in ("float32", "float16")
                   and not self.tensors[i].constant for i in op.inputs):
                found.append(op.name)
        return sorted(set(found))

    @property
    def signatures(self) -> list[str]:
        """The signature keys ("serving_default" ...)."""
        return [s.key for s in self.signature_defs]

    @property
    def op_counts(self) -> dict[str, int]:
        """Operator name -> number of uses (names of custom ops are their custom codes)."""
        counts: Counter = Counter()
        for op in self.ops:
            counts[op.name] += op.count
        return dict(counts)

    @property
    def flex_ops(self) -> list[str]:
        return sorted({op.name for op in self.ops if op.flex})

    @property
    def custom_ops(self) -> list[str]:
        """Custom ops that are not Flex ops (a runtime must have them registered)."""
        return sorted({op.name for op in self.ops if op.custom and not op.flex})

    @property
    def is_dynamic(self) -> bool:
        """True when an input has a dimension of unknown size."""
        return any(t.is_dynamic for t in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document (``inspect --json``)."""
        return {
            "path": self.path,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "schema_version": self.schema_version,
            "description": self.description,
            "inputs": [t.io_dict() for t in self.inputs],
            "outputs": [t.io_dict() for t in self.outputs],
            "subgraphs": [asdict(s) for s in self.subgraphs],
            "ops": [asdict(o) for o in self.ops],
            "op_counts": self.op_counts,
            "custom_ops": self.custom_ops,
            "flex_ops": self.flex_ops,
            "weights": [asdict(w) for w in self.weights],
            "sparse_tensors": list(self.sparse_tensors),
            "float_compute_ops": self.float_compute_ops(),
            "min_runtime_version": self.min_runtime_version,
            "metadata": sorted(self.metadata),
            "signatures": list(self.signatures),
        }
