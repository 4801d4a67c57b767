"""The .tflite file itself: identity (sha256, bytes) and a bounds check of its flatbuffer structure.

Some runtimes crash (tflite-runtime 2.14 segfaults on a truncated model) or fail with an unhelpful
message (a UnicodeDecodeError on random bytes) instead of raising a clear error. So before a runtime
sees a file, :func:`check` walks the parts of the TFLite flatbuffer the interpreter reads first —
the Model table, its operator codes, subgraphs (tensors, operators) and buffers — and checks that every
offset and vector stays inside the file. It is not a full flatbuffer verifier; it catches files that
are not TFLite models at all and files cut short. Standard library only.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from pathlib import Path

from agent.errors import JobFailed
from agent.regular_file import NotRegularFile, open_regular

FILE_IDENTIFIER = b"TFL3"
_MIN_BYTES = 16

# Field numbers in tensorflow/compiler/mlir/lite/schema/schema.fbs (stable since schema v3).
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS, _MODEL_DESCRIPTION, _MODEL_BUFFERS = 1, 2, 3, 4
_OPCODE_CUSTOM_CODE = 1
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_NAME = 0, 3
_OPERATOR_INPUTS, _OPERATOR_OUTPUTS = 1, 2
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2


def sha256_of(path: Path) -> str:
    """Hex sha256 of the file's bytes. Raises OSError (NotRegularFile: missing, unreadable, not a regular
    file) when it cannot be read; never blocks on a FIFO."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Truncated(Exception):
    """An offset or length points outside the file (internal to this module)."""


class _Reader:
    def __init__(self, data: mmap.mmap):
        self.data = data
        self.size = len(data)

    def _need(self, pos: int, length: int, what: str) -> None:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise _Truncated(f"{what} at byte {pos} (+{length}) lies outside the file ({self.size} bytes)")

    def u32(self, pos: int, what: str) -> int:
        self._need(pos, 4, what)
        return struct.unpack_from("<I", self.data, pos)[0]

    def field(self, table: int, index: int, what: str) -> int:
        """Absolute position of field ``index`` of the table at ``table``, or 0 when absent."""
        self._need(table, 4, what)
        vtable = table - struct.unpack_from("<i", self.data, table)[0]
        self._need(vtable, 4, f"{what} vtable")
        vt_size, table_size = struct.unpack_from("<HH", self.data, vtable)
        self._need(vtable, vt_size, f"{what} vtable")
        self._need(table, table_size, what)
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return 0
        offset = struct.unpack_from("<H", self.data, vtable + slot)[0]
        return table + offset if offset else 0

    def ref(self, table: int, index: int, what: str) -> int:
        """Target of an offset field (table, vector or string), or 0 when the field is absent."""
        pos = self.field(table, index, what)
        return pos + self.u32(pos, what) if pos else 0

    def vector(self, start: int, element_size: int, what: str) -> list[int]:
        """Element positions of the vector at ``start`` (after checking it fits)."""
        length = self.u32(start, what)
        self._need(start + 4, length * element_size, what)
        return [start + 4 + i * element_size for i in range(length)]

    def string(self, start: int, what: str) -> str:
        """The UTF-8 string at ``start``; raises _Truncated when it is not valid UTF-8 (the runtimes decode
        names strictly and would fail later with a UnicodeDecodeError)."""
        length = self.u32(start, what)
        self._need(start + 4, length, what)
        raw = bytes(self.data[start + 4:start + 4 + length])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Truncated(f"{what} at byte {start} is not valid UTF-8 ({raw[:40]!r})") from exc

    def tables(self, table: int, index: int, what: str) -> list[int]:
        start = self.ref(table, index, what)
        if not start:
            return []
        return [pos + self.u32(pos, what) for pos in self.vector(start, 4, what)]

    def u64(self, table: int, index: int, what: str) -> int:
        pos = self.field(table, index, what)
        if not pos:
            return 0
        self._need(pos, 8, what)
        return struct.unpack_from("<Q", self.data, pos)[0]


def check(path: Path) -> list[str]:
    """Check that ``path`` holds a complete TFLite flatbuffer; return the custom op names it uses.

    Raises JobFailed(kind="missing_model") when the file does not exist or cannot be read (permission,
    symlink loop) and JobFailed(kind="not_a_model") when it is not a regular file (a directory, a FIFO,
    a device), not a TFLite model, cut short, or names a tensor / op in invalid UTF-8; the message names
    the file and what to do. Never blocks: a FIFO is refused, not opened for reading.
    """
    try:
        f = open_regular(path)
    except NotRegularFile as exc:
        kind = "not_a_model" if exc.not_regular else "missing_model"
        raise JobFailed(kind, f"model file {exc}; " + ("pass a .tflite file" if kind == "not_a_model" else
                        "check the path and its permissions (on a device: was the model pushed?)")) from exc
    with f:
        head = f.read(_MIN_BYTES)
        if len(head) < _MIN_BYTES or head[4:8] != FILE_IDENTIFIER:
            size = os.fstat(f.fileno()).st_size
            raise JobFailed("not_a_model", f"{path} is not a TFLite model: it does not carry the TFLite "
                            f"flatbuffer identifier {FILE_IDENTIFIER.decode()!r} at byte 4 "
                            f"({size} bytes); pass a .tflite file produced by a TFLite converter")
        # mmap, not read(): only the pages of the structure are touched, so checking a 100 MB model
        # does not add 100 MB to the worker's peak RSS.
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                return _walk(_Reader(data))
            except _Truncated as exc:
                raise JobFailed("not_a_model", f"{path} is truncated or corrupt: {exc}; re-copy or re-convert "
                                "the model (compare its sha256 with the original)") from exc


def _walk(r: _Reader) -> list[str]:
    model = r.u32(0, "root table offset")
    custom: list[str] = []
    for opcode in r.tables(model, _MODEL_OPERATOR_CODES, "operator code"):
        name = r.ref(opcode, _OPCODE_CUSTOM_CODE, "custom op name")
        if name:
            custom.append(r.string(name, "custom op name"))
    description = r.ref(model, _MODEL_DESCRIPTION, "description")
    if description:
        r.vector(description, 1, "description")
    subgraphs = r.tables(model, _MODEL_SUBGRAPHS, "subgraph")
    if not subgraphs:
        raise _Truncated("the model has no subgraph")
    for subgraph in subgraphs:
        for index in (_SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS):
            start = r.ref(subgraph, index, "subgraph inputs/outputs")
            if start:
                r.vector(start, 4, "subgraph inputs/outputs")
        for tensor in r.tables(subgraph, _SUBGRAPH_TENSORS, "tensor"):
            for index, what in ((_TENSOR_SHAPE, "tensor shape"), (_TENSOR_NAME, "tensor name")):
                start = r.ref(tensor, index, what)
                if start:
                    if index == _TENSOR_NAME:
                        r.string(start, what)
                    else:
                        r.vector(start, 4, what)
        for operator in r.tables(subgraph, _SUBGRAPH_OPERATORS, "operator"):
            for index in (_OPERATOR_INPUTS, _OPERATOR_OUTPUTS):
                start = r.ref(operator, index, "operator inputs/outputs")
                if start:
                    r.vector(start, 4, "operator inputs/outputs")
    for buffer in r.tables(model, _MODEL_BUFFERS, "buffer"):
        start = r.ref(buffer, _BUFFER_DATA, "buffer data")
        if start:
            r.vector(start, 1, "buffer data")
        offset, size = r.u64(buffer, _BUFFER_OFFSET, "buffer"), r.u64(buffer, _BUFFER_SIZE, "buffer")
        if offset > 1:  # large models keep weights after the flatbuffer, addressed from file start
            r._need(offset, size, "external buffer data")
    return custom
