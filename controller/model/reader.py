"""A pure-Python reader of TFLite model files (the ``TFL3`` flatbuffer): no TensorFlow, no runtime.

:func:`read_model` returns a :class:`ModelInfo`: the main subgraph's inputs and outputs (name, shape,
shape signature, dtype, quantization), the operator codes with their versions and how often each is
used, custom and Select-TF (Flex) ops, subgraphs, the dtypes of the constant (weight) tensors, sparse
tensors, the ``min_runtime_version`` metadata entry, the file size and its sha256.

The field numbers below follow ``tensorflow/lite/schema/schema.fbs`` (tables ``Model``, ``SubGraph``,
``Tensor``, ``QuantizationParameters``, ``OperatorCode``, ``Operator``, ``Buffer``, ``Metadata``,
``SignatureDef``); the flatbuffer wire format (root offset, vtables, vectors, strings) is read by hand
with bounds checks, so a truncated or foreign file is an :class:`~controller.errors.InputError`, never
an ``IndexError`` or a crash.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.regular_file import NotRegularFile, open_regular
from controller.errors import InputError
from controller.model.info import (  # noqa: F401  (re-exported: the reader's result types)
    CUSTOM_CODE,
    FLEX_PREFIX,
    ModelInfo,
    OpCode,
    OperatorInfo,
    OpUse,
    Signature,
    SubgraphInfo,
    TensorInfo,
    WeightStats,
)

FILE_IDENTIFIER = b"TFL3"

# schema.fbs `enum TensorType`, as numpy-style names (what the runtimes' get_input_details() report).
TENSOR_TYPES = (
    "float32", "float16", "int32", "uint8", "int64", "string", "bool", "int16", "complex64", "int8",
    "float64", "complex128", "uint64", "resource", "variant", "uint32", "uint16", "int4", "bfloat16",
    "int2", "uint4", "float8_e4m3fn", "float8_e5m2",
)

# schema.fbs `enum BuiltinOperator`, indexed by code (0 ... 209 in the schema of TF 2.21 / LiteRT 2.3).
BUILTIN_OPERATORS = (
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE",
    "DEQUANTIZE", "EMBEDDING_LOOKUP", "FLOOR", "FULLY_CONNECTED", "HASHTABLE_LOOKUP", "L2_NORMALIZATION",
    "L2_POOL_2D", "LOCAL_RESPONSE_NORMALIZATION", "LOGISTIC", "LSH_PROJECTION", "LSTM", "MAX_POOL_2D",
    "MUL", "RELU", "RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "RNN", "SOFTMAX",
    "SPACE_TO_DEPTH", "SVDF", "TANH", "CONCAT_EMBEDDINGS", "SKIP_GRAM", "CALL", "CUSTOM",
    "EMBEDDING_LOOKUP_SPARSE", "PAD", "UNIDIRECTIONAL_SEQUENCE_RNN", "GATHER", "BATCH_TO_SPACE_ND",
    "SPACE_TO_BATCH_ND", "TRANSPOSE", "MEAN", "SUB", "DIV", "SQUEEZE", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "STRIDED_SLICE", "BIDIRECTIONAL_SEQUENCE_RNN", "EXP", "TOPK_V2", "SPLIT", "LOG_SOFTMAX", "DELEGATE",
    "BIDIRECTIONAL_SEQUENCE_LSTM", "CAST", "PRELU", "MAXIMUM", "ARG_MAX", "MINIMUM", "LESS", "NEG",
    "PADV2", "GREATER", "GREATER_EQUAL", "LESS_EQUAL", "SELECT", "SLICE", "SIN", "TRANSPOSE_CONV",
    "SPARSE_TO_DENSE", "TILE", "EXPAND_DIMS", "EQUAL", "NOT_EQUAL", "LOG", "SUM", "SQRT", "RSQRT", "SHAPE",
    "POW", "ARG_MIN", "FAKE_QUANT", "REDUCE_PROD", "REDUCE_MAX", "PACK", "LOGICAL_OR", "ONE_HOT",
    "LOGICAL_AND", "LOGICAL_NOT", "UNPACK", "REDUCE_MIN", "FLOOR_DIV", "REDUCE_ANY", "SQUARE",
    "ZEROS_LIKE", "FILL", "FLOOR_MOD", "RANGE", "RESIZE_NEAREST_NEIGHBOR", "LEAKY_RELU",
    "SQUARED_DIFFERENCE", "MIRROR_PAD", "ABS", "SPLIT_V", "UNIQUE", "CEIL", "REVERSE_V2", "ADD_N",
    "GATHER_ND", "COS", "WHERE", "RANK", "ELU", "REVERSE_SEQUENCE", "MATRIX_DIAG", "QUANTIZE",
    "MATRIX_SET_DIAG", "ROUND", "HARD_SWISH", "IF", "WHILE", "NON_MAX_SUPPRESSION_V4",
    "NON_MAX_SUPPRESSION_V5", "SCATTER_ND", "SELECT_V2", "DENSIFY", "SEGMENT_SUM", "BATCH_MATMUL",
    "PLACEHOLDER_FOR_GREATER_OP_CODES", "CUMSUM", "CALL_ONCE", "BROADCAST_TO", "RFFT2D", "CONV_3D", "IMAG",
    "REAL", "COMPLEX_ABS", "HASHTABLE", "HASHTABLE_FIND", "HASHTABLE_IMPORT", "HASHTABLE_SIZE",
    "REDUCE_ALL", "CONV_3D_TRANSPOSE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "BROADCAST_ARGS",
    "RANDOM_STANDARD_NORMAL", "BUCKETIZE", "RANDOM_UNIFORM", "MULTINOMIAL", "GELU", "DYNAMIC_UPDATE_SLICE",
    "RELU_0_TO_1", "UNSORTED_SEGMENT_PROD", "UNSORTED_SEGMENT_MAX", "UNSORTED_SEGMENT_SUM", "ATAN2",
    "UNSORTED_SEGMENT_MIN", "SIGN", "BITCAST", "BITWISE_XOR", "RIGHT_SHIFT", "STABLEHLO_LOGISTIC",
    "STABLEHLO_ADD", "STABLEHLO_DIVIDE", "STABLEHLO_MULTIPLY", "STABLEHLO_MAXIMUM", "STABLEHLO_RESHAPE",
    "STABLEHLO_CLAMP", "STABLEHLO_CONCATENATE", "STABLEHLO_BROADCAST_IN_DIM", "STABLEHLO_CONVOLUTION",
    "STABLEHLO_SLICE", "STABLEHLO_CUSTOM_CALL", "STABLEHLO_REDUCE", "STABLEHLO_ABS", "STABLEHLO_AND",
    "STABLEHLO_COSINE", "STABLEHLO_EXPONENTIAL", "STABLEHLO_FLOOR", "STABLEHLO_LOG", "STABLEHLO_MINIMUM",
    "STABLEHLO_NEGATE", "STABLEHLO_OR", "STABLEHLO_POWER", "STABLEHLO_REMAINDER", "STABLEHLO_RSQRT",
    "STABLEHLO_SELECT", "STABLEHLO_SUBTRACT", "STABLEHLO_TANH", "STABLEHLO_SCATTER", "STABLEHLO_COMPARE",
    "STABLEHLO_CONVERT", "STABLEHLO_DYNAMIC_SLICE", "STABLEHLO_DYNAMIC_UPDATE_SLICE", "STABLEHLO_PAD",
    "STABLEHLO_IOTA", "STABLEHLO_DOT_GENERAL", "STABLEHLO_REDUCE_WINDOW", "STABLEHLO_SORT",
    "STABLEHLO_WHILE", "STABLEHLO_GATHER", "STABLEHLO_TRANSPOSE", "DILATE", "STABLEHLO_RNG_BIT_GENERATOR",
    "REDUCE_WINDOW", "STABLEHLO_COMPOSITE", "STABLEHLO_SHIFT_LEFT", "STABLEHLO_CBRT", "STABLEHLO_CASE",
)
class _Truncated(Exception):
    """Raised inside the reader when an offset points outside the file."""


class _Table:
    """One flatbuffer table: a position in the buffer and its vtable."""

    __slots__ = ("buf", "pos", "vsize", "vtable")

    def __init__(self, buf: bytes, pos: int):
        self.buf = buf
        self.pos = pos
        vtable = pos - _unpack(buf, "<i", pos)
        self.vtable = vtable
        self.vsize = _unpack(buf, "<H", vtable)
        if self.vsize < 4 or self.vsize % 2:
            raise _Truncated(f"bad vtable size {self.vsize} at byte {vtable}")

    def _field(self, index: int) -> int:
        slot = 4 + 2 * index
        if slot >= self.vsize:
            return 0
        return _unpack(self.buf, "<H", self.vtable + slot)

    def scalar(self, index: int, fmt: str, default: Any = 0) -> Any:
        off = self._field(index)
        return _unpack(self.buf, fmt, self.pos + off) if off else default

    def _indirect(self, index: int) -> int | None:
        off = self._field(index)
        if not off:
            return None
        at = self.pos + off
        return at + _unpack(self.buf, "<I", at)

    def string(self, index: int) -> str | None:
        at = self._indirect(index)
        if at is None:
            return None
        length = _unpack(self.buf, "<I", at)
        raw = _slice(self.buf, at + 4, length)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # The runtimes decode names strictly (and fail with an 'internal' UnicodeDecodeError): refuse here.
            raise _Truncated(f"a name at byte {at} is not valid UTF-8 ({raw[:40]!r})") from None

    def table(self, index: int) -> _Table | None:
        at = self._indirect(index)
        return None if at is None else _Table(self.buf, at)

    def vector_len(self, index: int) -> int:
        at = self._indirect(index)
        return 0 if at is None else _unpack(self.buf, "<I", at)

    def scalars(self, index: int, fmt: str) -> list[Any] | None:
        """A vector of scalars (``fmt`` one struct code, e.g. "i", "f", "q"); None when absent."""
        at = self._indirect(index)
        if at is None:
            return None
        length = _unpack(self.buf, "<I", at)
        size = struct.calcsize("<" + fmt)
        raw = _slice(self.buf, at + 4, length * size)
        return list(struct.unpack(f"<{length}{fmt}", raw))

    def tables(self, index: int) -> list[_Table]:
        at = self._indirect(index)
        if at is None:
            return []
        length = _unpack(self.buf, "<I", at)
        _slice(self.buf, at + 4, 4 * length)  # bounds check once for the whole offset array
        out = []
        for i in range(length):
            elem = at + 4 + 4 * i
            out.append(_Table(self.buf, elem + _unpack(self.buf, "<I", elem)))
        return out


def _unpack(buf: bytes, fmt: str, pos: int) -> Any:
    size = struct.calcsize(fmt)
    if pos < 0 or pos + size > len(buf):
        raise _Truncated(f"offset {pos} is outside the file ({len(buf)} bytes)")
    return struct.unpack_from(fmt, buf, pos)[0]


def _slice(buf: bytes, pos: int, length: int) -> bytes:
    if pos < 0 or length < 0 or pos + length > len(buf):
        raise _Truncated(f"data at {pos}..{pos + length} is outside the file ({len(buf)} bytes)")
    return buf[pos:pos + length]


def builtin_name(code: int) -> str:
    """The schema name of a builtin operator code (``"UNKNOWN_<code>"`` for codes newer than the
    schema this reader knows)."""
    return BUILTIN_OPERATORS[code] if 0 <= code < len(BUILTIN_OPERATORS) else f"UNKNOWN_{code}"


def dtype_name(code: int) -> str:
    """numpy-style name of a schema TensorType code (``"unknown_<code>"`` when newer than the reader)."""
    return TENSOR_TYPES[code] if 0 <= code < len(TENSOR_TYPES) else f"unknown_{code}"


def read_model(path: str | Path) -> ModelInfo:
    """Read a .tflite file without TensorFlow or a runtime.

    Promises: the I/O of the main subgraph (index 0) in the order the model declares them, every
    operator code with its version and use count, and the other facts of :class:`ModelInfo`.
    Raises InputError naming the file when it is missing, unreadable, not a TFLite flatbuffer, or
    truncated.
    """
    p = Path(path)
    try:
        with open_regular(p) as f:  # a FIFO or /dev/zero: refused at once, not read forever
            head = f.read(8)
            # Not a model: say so without reading (a huge sparse file) into memory first.
            data = head + f.read() if head[4:8] == FILE_IDENTIFIER else head
    except NotRegularFile as exc:
        hint = "give the path of a .tflite model" if exc.missing or exc.not_regular else "check its permissions"
        raise InputError(f"{exc}; {hint}") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read it ({exc.strerror})") from exc
    try:
        return _parse(p, data)
    except _Truncated as exc:
        raise InputError(
            f"{p}: not a valid TFLite model - the flatbuffer is truncated or corrupt ({exc}); "
            "convert the model again or copy the complete file"
        ) from None


def read_model_bytes(data: bytes, name: str = "<bytes>") -> ModelInfo:
    """Like :func:`read_model` for a model already in memory; ``name`` is used in error messages."""
    try:
        return _parse(Path(name), data)
    except _Truncated as exc:
        raise InputError(f"{name}: not a valid TFLite model - truncated or corrupt ({exc})") from None


def _parse(p: Path, data: bytes) -> ModelInfo:
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        found = data[4:8] if len(data) >= 8 else b""
        raise InputError(
            f"{p}: not a TFLite model (expected the flatbuffer identifier 'TFL3' at byte 4, found "
            f"{found!r}, file has {len(data)} bytes); give a .tflite file written by the TFLite converter"
        )
    model = _Table(data, _unpack(data, "<I", 0))
    buffers = model.tables(4)

    codes: list[OpCode] = []
    for oc in model.tables(1):
        deprecated = oc.scalar(0, "<b", 0)
        builtin = max(oc.scalar(3, "<i", 0), deprecated)  # same rule as schema_utils GetBuiltinCode
        custom = oc.string(1)
        version = oc.scalar(2, "<i", 1)
        name = custom if builtin == CUSTOM_CODE and custom else builtin_name(builtin)
        codes.append(OpCode(name=name, builtin_code=builtin, version=version, custom_code=custom))

    uses: Counter = Counter()
    subgraphs: list[SubgraphInfo] = []
    main_tensors: list[TensorInfo] = []
    main_io: tuple[list[int], list[int]] = ([], [])
    main_ops: list[OperatorInfo] = []
    weights: dict[str, list[int]] = {}
    sparse: list[str] = []
    for sg_index, sg in enumerate(model.tables(2)):
        tensors = [_tensor(t, i) for i, t in enumerate(sg.tables(0))]
        tensors = [replace(t, constant=True) if _buffer_bytes(buffers, t.buffer) else t for t in tensors]
        operators = sg.tables(3)
        ops_here = []
        for op in operators:
            idx = op.scalar(0, "<I", 0)
            if idx >= len(codes):
                raise _Truncated(f"operator uses op code {idx}, the table has {len(codes)}")
            uses[idx] += 1
            if sg_index == 0:
                ops_here.append(OperatorInfo(name=codes[idx].name, version=codes[idx].version,
                                             inputs=op.scalars(1, "i") or [], outputs=op.scalars(2, "i") or []))
        inputs = sg.scalars(1, "i") or []
        outputs = sg.scalars(2, "i") or []
        for i in inputs + outputs:
            if not 0 <= i < len(tensors):
                raise _Truncated(f"subgraph {sg_index} names tensor {i}, it has {len(tensors)}")
        subgraphs.append(SubgraphInfo(
            name=sg.string(4) or "", tensors=len(tensors), operators=len(operators),
            inputs=inputs, outputs=outputs,
        ))
        for t in tensors:
            if t.sparse:
                sparse.append(t.name)
            nbytes = _buffer_bytes(buffers, t.buffer)
            if nbytes:
                stats = weights.setdefault(t.dtype, [0, 0])
                stats[0] += 1
                stats[1] += nbytes
        if sg_index == 0:
            main_tensors, main_io, main_ops = tensors, (inputs, outputs), ops_here

    metadata: dict[str, int] = {}
    for md in model.tables(6):
        metadata[md.string(0) or ""] = md.scalar(1, "<I", 0)
    min_version = None
    if "min_runtime_version" in metadata:
        raw = _buffer_data(buffers, metadata["min_runtime_version"])
        text = raw.split(b"\0", 1)[0].decode("ascii", errors="replace").strip()
        min_version = text or None

    return ModelInfo(
        path=str(p),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        schema_version=model.scalar(0, "<I", 0),
        description=model.string(3) or "",
        inputs=[main_tensors[i] for i in main_io[0]],
        outputs=[main_tensors[i] for i in main_io[1]],
        subgraphs=subgraphs,
        operator_codes=codes,
        ops=[
            OpUse(name=c.name, version=c.version, count=uses[i], builtin_code=c.builtin_code,
                  custom=c.is_custom, flex=c.is_flex)
            for i, c in enumerate(codes) if uses[i]
        ],
        weights=[WeightStats(dtype=k, tensors=v[0], bytes=v[1]) for k, v in sorted(weights.items())],
        sparse_tensors=sparse,
        min_runtime_version=min_version,
        metadata=metadata,
        signature_defs=[_signature(s) for s in model.tables(7)],
        tensors=main_tensors,
        operators=main_ops,
    )


def _signature(s: _Table) -> Signature:
    def names(index: int) -> dict[str, int]:
        return {m.string(0) or "": m.scalar(1, "<I", 0) for m in s.tables(index)}

    return Signature(key=s.string(2) or "", subgraph=s.scalar(4, "<I", 0), inputs=names(0),
                     outputs=names(1))


def _tensor(t: _Table, index: int) -> TensorInfo:
    shape = t.scalars(0, "i") or []
    signature = t.scalars(7, "i")
    q = t.table(4)
    scales: list[float] = []
    zero_points: list[int] = []
    qdim = 0
    if q is not None:
        scales = [float(s) for s in (q.scalars(2, "f") or [])]
        zero_points = [int(z) for z in (q.scalars(3, "q") or [])]
        qdim = q.scalar(6, "<i", 0)
    per_tensor = len(scales) == 1
    return TensorInfo(
        name=t.string(3) or f"tensor_{index}",
        index=index,
        shape=shape,
        shape_signature=signature if signature is not None else list(shape),
        dtype=dtype_name(t.scalar(1, "<b", 0)),
        scale=scales[0] if per_tensor else None,
        zero_point=(zero_points[0] if zero_points else 0) if per_tensor else None,
        scales=scales,
        zero_points=zero_points,
        quantized_dimension=qdim,
        buffer=t.scalar(2, "<I", 0),
        sparse=t.table(6) is not None,
    )


def _buffer_bytes(buffers: list[_Table], index: int) -> int:
    """Size of a buffer's data: inline data, or the (offset, size) of data stored after the
    flatbuffer (models > 2 GB). Index 0 is the always-empty buffer."""
    if index <= 0 or index >= len(buffers):
        return 0
    b = buffers[index]
    return b.vector_len(0) or (b.scalar(2, "<Q", 0) if b.scalar(1, "<Q", 0) > 1 else 0)


def _buffer_data(buffers: list[_Table], index: int) -> bytes:
    if index < 0 or index >= len(buffers):
        raise _Truncated(f"metadata names buffer {index}, the model has {len(buffers)}")
    at = buffers[index]._indirect(0)
    if at is None:
        return b""
    return _slice(buffers[index].buf, at + 4, _unpack(buffers[index].buf, "<I", at))
