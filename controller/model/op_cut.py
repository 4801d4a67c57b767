"""Single-op models cut from a .tflite file, for the per-op profile (``edgebench profile``).

Every operator of the main subgraph becomes a model of its own: that one operator, its tensors, the
buffers of its constant inputs (weights) and the whole operator-code table (so the operator keeps its
code index and version). The operator's non-constant inputs become the model's inputs, in the order the
operator takes them, and its outputs the model's outputs. The agent feeds those inputs with the real
intermediate tensors of the whole model (captured on the device) and times ``invoke()`` of each cut.

Operators that call other subgraphs (IF, WHILE, CALL_ONCE ... ) are not cut: a single-op model of them
would have to carry their bodies; they are listed with the reason instead.

The flatbuffer is read and written with the TFLite schema's object API (``schema_py_generated``, shipped
by ai-edge-litert and TensorFlow) and the ``flatbuffers`` package.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.errors import InputError, ToolError
from controller.model.reader import read_model

#: operators whose options name other subgraphs: not cut (their bodies would have to come along)
SUBGRAPH_OPS = frozenset({"IF", "WHILE", "CALL_ONCE", "CALL", "STABLEHLO_COMPOSITE", "STABLEHLO_WHILE",
                          "STABLEHLO_CASE", "STABLEHLO_REDUCE", "STABLEHLO_REDUCE_WINDOW",
                          "STABLEHLO_SCATTER", "STABLEHLO_SORT"})
#: where the schema's object API is found, first match wins
SCHEMA_MODULES = ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated")


@dataclass(frozen=True)
class OpCut:
    """One operator of the main subgraph and its single-op model."""

    index: int  #: position in the main subgraph's operator list (= the interpreter's node index)
    op: str  #: builtin name ("CONV_2D") or custom code
    file: str | None  #: the single-op .tflite, None when the operator was not cut
    inputs: tuple[int, ...]  #: tensor indices (of the whole model) that feed the cut model's inputs, in order
    sha256: str | None = None
    bytes: int = 0
    skipped: str | None = None  #: why the operator was not cut

    def plan_entry(self, file: str | None = None) -> dict[str, Any]:
        """The JSON object the agent reads (``JobSpec.profile["ops"]``); ``file`` overrides the path
        (the device's copy)."""
        return {"index": self.index, "op": self.op, "file": file if file is not None else self.file,
                "inputs": list(self.inputs), "skipped": self.skipped}


def schema_module() -> Any:
    """The TFLite schema's object API. Raises ToolError when neither ai-edge-litert nor TensorFlow is
    installed on this machine."""
    for name in SCHEMA_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ToolError("cutting single-op models needs the TFLite schema module that ai-edge-litert ships: "
                    "pip install 'edgebench[runtime]' (ai-edge-litert) on this machine")


def cut_ops(model_path: str | Path, out_dir: str | Path) -> list[OpCut]:
    """Write one single-op model per operator of ``model_path``'s main subgraph into ``out_dir``
    (``op-<index>.tflite``) and return them in operator order (operators that call subgraphs come back
    with ``file=None`` and ``skipped`` saying why).

    Raises InputError when the file is not a readable TFLite model, ToolError when the schema module or
    ``flatbuffers`` is missing.
    """
    info = read_model(model_path)  # InputError for anything that is not a complete TFLite flatbuffer
    try:
        import flatbuffers
    except ImportError as exc:
        raise ToolError("cutting single-op models needs the flatbuffers package: pip install flatbuffers") \
            from exc
    schema = schema_module()
    data = Path(model_path).read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    graph = model.subgraphs[0]
    if not graph.operators:
        raise InputError(f"{model_path}: the main subgraph has no operators: nothing to profile")
    constant = {t for t, tensor in enumerate(graph.tensors)
                if tensor.buffer and _buffer_data(model.buffers[tensor.buffer], data) is not None}
    producers = _static_producers(graph, constant)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cuts = []
    for index, op in enumerate(graph.operators):
        name = info.operators[index].name
        if name in SUBGRAPH_OPS:
            cuts.append(OpCut(index, name, None, (), skipped=f"{name} calls other subgraphs; profile its "
                              "body's ops by exporting them as a model of their own"))
            continue
        payload, inputs = _single_op_model(schema, flatbuffers, model, data, index, constant, producers,
                                           f"operator {index} ({name}) of {Path(model_path).name}")
        path = out / f"op-{index:04d}.tflite"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, path)
        cuts.append(OpCut(index, name, str(path), tuple(inputs), hashlib.sha256(payload).hexdigest(),
                          len(payload)))
    return cuts


def _ints(values: Any) -> list[int]:
    """A vector of the object API (None, a list or a numpy array) as a list of ints."""
    return [] if values is None else [int(v) for v in values]


def _buffer_data(buffer: Any, data: bytes) -> Any:
    """The bytes of a buffer: inline, or (models over 2 GB) at ``offset`` in the file; None if empty."""
    if buffer is None:
        return None
    if buffer.data is not None and len(buffer.data):
        return buffer.data
    if buffer.offset and buffer.offset > 1 and buffer.size:
        return bytearray(data[buffer.offset:buffer.offset + buffer.size])
    return None


def _static_producers(graph: Any, constant: set[int]) -> dict[int, int]:
    """tensor -> index of the operator that makes it from constants only (e.g. the DEQUANTIZE of fp16
    weights). Such an operator travels with its consumer's cut: a delegate sees constant weights there,
    as in the whole model, instead of a weight fed as an input."""
    static = set(constant)
    producers: dict[int, int] = {}
    for index, op in enumerate(graph.operators):
        inputs = [t for t in _ints(op.inputs) if t >= 0]
        if all(t in static for t in inputs):
            for t in _ints(op.outputs):
                static.add(t)
                producers[t] = index
    return producers


def _single_op_model(schema: Any, flatbuffers: Any, model: Any, data: bytes, index: int, constant: set[int],
                     producers: dict[int, int], what: str) -> tuple[bytes, list[int]]:
    """The flatbuffer of a model made of operator ``index`` (with the operators that make its static
    inputs from constants), and the tensor indices (of the whole model) of its inputs, in order."""
    graph = model.subgraphs[0]
    chain = _with_static_producers(graph, index, producers)
    ops = [graph.operators[i] for i in chain]
    used: list[int] = []
    for op in ops:
        for t in _ints(op.inputs) + _ints(op.outputs) + _ints(op.intermediates):
            if t >= 0 and t not in used:
                used.append(t)
    new_index = {old: new for new, old in enumerate(used)}
    buffers = [schema.BufferT()]  # buffer 0: the empty sentinel every activation points to
    tensors = []
    for old in used:
        tensor = copy.copy(graph.tensors[old])
        if old in constant:
            buffer = schema.BufferT()
            buffer.data = _buffer_data(model.buffers[tensor.buffer], data)
            buffers.append(buffer)
            tensor.buffer = len(buffers) - 1
        else:
            tensor.buffer = 0
        tensors.append(tensor)
    made_here = {t for op in ops for t in _ints(op.outputs)}
    feeds: list[int] = []
    for t in _ints(graph.operators[index].inputs):
        if t >= 0 and t not in constant and t not in made_here and t not in feeds \
                and not graph.tensors[t].isVariable:
            feeds.append(t)
    cut_ops_: list[Any] = []
    for op in ops:
        cut_op = copy.copy(op)
        cut_op.inputs = [new_index[t] if t >= 0 else -1 for t in _ints(op.inputs)]
        cut_op.outputs = [new_index[t] for t in _ints(op.outputs)]
        if op.intermediates is not None:
            cut_op.intermediates = [new_index[t] for t in _ints(op.intermediates) if t >= 0]
        cut_ops_.append(cut_op)
    sub = schema.SubGraphT()
    sub.tensors = tensors
    sub.inputs = [new_index[t] for t in feeds]
    sub.outputs = list(cut_ops_[-1].outputs)
    sub.operators = cut_ops_
    sub.name = f"op{index}"
    cut = schema.ModelT()
    cut.version = model.version
    cut.operatorCodes = model.operatorCodes
    cut.subgraphs = [sub]
    cut.buffers = buffers
    cut.description = f"edgebench: {what}"
    builder = flatbuffers.Builder(1024 + sum(len(b.data) for b in buffers if b.data is not None))
    builder.Finish(cut.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), feeds


def _with_static_producers(graph: Any, index: int, producers: dict[int, int]) -> list[int]:
    """``index`` and, before it in model order, the operators that make its static inputs (recursively)."""
    chain = {index}
    todo = [index]
    while todo:  # bounded: each operator enters the chain at most once
        for t in _ints(graph.operators[todo.pop()].inputs):
            producer = producers.get(t)
            if producer is not None and producer not in chain:
                chain.add(producer)
                todo.append(producer)
    return sorted(chain)
