"""External delegates and what a delegate took of the graph.

:func:`load` opens an external delegate library (``PATH.so`` with ``key=value`` options) through the
runtime's own ``load_delegate``; a missing library or one without the TFLite plugin symbols is a
``delegate_load`` JobFailed, never a crash of the batch.

:func:`count` reads the primary subgraph's nodes after ``allocate_tensors()`` (``_get_ops_details``,
in ai-edge-litert 2.3, tflite-runtime 2.14 and tf.lite). TFLite keeps the original nodes and appends one
``DELEGATE`` node per partition a delegate took; the execution plan itself is not exposed. A
partition's original ops are found by walking back from the DELEGATE node's output tensors through
their producers until the DELEGATE node's input tensors: every op of a partition feeds one of its
outputs, and the partition's inputs bound it. The ops not reached run on the CPU kernels. Which
delegate made a node: the constructor applies the external delegates, ``allocate_tensors()`` then
applies the default XNNPACK, so the DELEGATE nodes present right after construction are the external
ones (:func:`delegate_nodes`).
Standard library only.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from agent.errors import JobFailed

DELEGATE_OP = "DELEGATE"


def load(runtime: Any, library: str, options: dict) -> Any:
    """The runtime's delegate object for ``library`` with ``options`` (str -> str). Raises
    JobFailed("delegate_load") when the file is missing, is not a delegate, or its factory fails."""
    who = f"{runtime.spec.name} {runtime.version}"
    if runtime.load_delegate is None:
        raise JobFailed("delegate_load", f"{who} has no load_delegate: it cannot load external delegates; use "
                        "ai-edge-litert or tflite-runtime")
    if not Path(library).is_file():
        raise JobFailed("delegate_load", f"delegate library {library} does not exist on this device; push it "
                        "there (or give the path where it is installed)")
    try:
        return runtime.load_delegate(library, {str(k): str(v) for k, v in options.items()})
    except Exception as exc:  # OSError (dlopen), AttributeError (no plugin symbol), ValueError (factory)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ("it is not a TFLite external delegate (it lacks tflite_plugin_create_delegate)"
                if "tflite_plugin" in text else "see the message")
        raise JobFailed("delegate_load", f"{who} could not load the delegate {library} with options "
                        f"{options}: {type(exc).__name__}: {text}; {hint}") from exc


def delegate_nodes(interpreter: Any) -> set | None:
    """Indices of the DELEGATE nodes now in the graph (None when the runtime does not expose nodes).
    Taken right after construction it names the external delegates' nodes: TFLite applies the
    delegates given to the constructor first and its default (XNNPACK) only at ``allocate_tensors()``."""
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return None
    return {n["index"] for n in details() if n.get("op_name") == DELEGATE_OP}


def count(interpreter: Any, external_nodes: set | None = None, external: str | None = None,
          xnnpack: bool = True) -> dict | None:
    """What the delegates took of an allocated interpreter's primary subgraph, or None when the runtime
    does not expose its nodes::

        {"delegate_nodes", "ops", "ops_delegated", "ops_on_cpu", "cpu_ops": {op type: n},
         "by_delegate": {name: {"nodes", "ops"}}}

    ``external_nodes`` (from :func:`delegate_nodes` after construction) are attributed to the external
    library ``external``; later DELEGATE nodes to XNNPACK when it is on (else "unknown")."""
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return None
    originals, partitions = taken_ops(details())
    taken: set = set()
    by_delegate: dict = {}
    if external:
        by_delegate[Path(external).name] = {"nodes": 0, "ops": 0}
    if xnnpack:
        by_delegate["XNNPACK"] = {"nodes": 0, "ops": 0}
    for node, partition in partitions:
        taken |= partition
        name = (Path(external).name if external and node["index"] in (external_nodes or set())
                else "XNNPACK" if xnnpack else "unknown")
        entry = by_delegate.setdefault(name, {"nodes": 0, "ops": 0})
        entry["nodes"] += 1
        entry["ops"] += len(partition)
    on_cpu = [n for n in originals if n["index"] not in taken]
    return {"delegate_nodes": len(partitions), "ops": len(originals), "ops_delegated": len(taken),
            "ops_on_cpu": len(on_cpu), "cpu_ops": dict(sorted(Counter(n["op_name"] for n in on_cpu).items())),
            "by_delegate": by_delegate}


def taken_ops(nodes: list[dict]) -> tuple[list[dict], list[tuple[dict, set]]]:
    """Split a primary subgraph's node listing (``_get_ops_details()`` after allocation) into its original
    ops and, for each DELEGATE node, that node with the indices of the original ops it replaced."""
    originals = [n for n in nodes if n.get("op_name") != DELEGATE_OP]
    producer = {}
    for node in originals:
        for tensor in node["outputs"]:
            producer[int(tensor)] = node["index"]
    by_index = {n["index"]: n for n in originals}
    return originals, [(n, _partition(n, producer, by_index)) for n in nodes if n.get("op_name") == DELEGATE_OP]


def _partition(node: dict, producer: dict, by_index: dict) -> set:
    """The original ops a DELEGATE node replaced: back from its outputs to its inputs."""
    bounds = {int(t) for t in node["inputs"]}
    frontier = [int(t) for t in node["outputs"]]
    seen: set = set()
    ops: set = set()
    while frontier:
        tensor = frontier.pop()
        if tensor in seen or tensor in bounds or tensor not in producer:
            continue
        seen.add(tensor)
        op = producer[tensor]
        if op not in ops:
            ops.add(op)
            frontier.extend(int(t) for t in by_index[op]["inputs"] if int(t) >= 0)
    return ops


def applied(delegation: dict | None) -> list[str] | None:
    """The delegates that took at least one node, external first; None when unknown."""
    if delegation is None:
        return None
    return [name for name, entry in delegation["by_delegate"].items() if entry["nodes"]]


def parse_spec(text: str) -> tuple:
    """``PATH.so[:key=value,...]`` -> (path, {key: value}). Raises ValueError naming the bad part."""
    path, sep, rest = text.partition(":")
    if not path.strip():
        raise ValueError(f"delegate {text!r}: give PATH.so[:key=value,...]")
    options = {}
    for item in rest.split(",") if sep and rest else []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"delegate {text!r}: option {item!r} is not key=value")
        options[key.strip()] = value
    return path.strip(), options
