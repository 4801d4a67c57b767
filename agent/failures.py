"""How a runtime's exception becomes a JobFailed whose kind and message say what to do.

The runtimes raise ValueError / RuntimeError with C++ log text; the kind is recognised from that text
(custom op, Flex op, too-new op version, not a flatbuffer, a delegate that failed to prepare the
model). Standard library only.
"""

from __future__ import annotations

import re

from agent.errors import JobFailed
from agent.runtimes import LoadedRuntime


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def classify(exc: BaseException, what: str, runtime: LoadedRuntime, custom_ops: list,
             delegate: str | None = None) -> JobFailed:
    """Turn a runtime exception into a JobFailed whose kind and message say what to do. ``delegate``:
    the external delegate library the job asked for (its failures to prepare the model are
    ``delegate_rejected``)."""
    text = str(exc)
    who = f"{runtime.spec.name} {runtime.version}"
    if delegate and "delegate" in text.lower():
        return JobFailed("delegate_rejected", f"the delegate {delegate} failed to prepare the model in {what} "
                         f"({who}: {first_line(exc)}); the delegate cannot run this model as it is: run "
                         "without --delegate, or with options the delegate accepts")
    if "unresolved custom op" in text:
        names = [n.rstrip(".") for n in re.findall(r"unresolved custom op: ([\w./-]+)", text)] or custom_ops
        return JobFailed("unresolved_op", f"the model uses custom op(s) {sorted(set(names))} that {who} does "
                         "not provide; reconvert the model with builtin ops only, or run it with a runtime "
                         "built with these ops")
    if "Select TensorFlow op" in text or "Flex" in text:
        flex = [name for name in custom_ops if name.startswith("Flex")]
        return JobFailed("flex_op", f"the model needs Select-TF (Flex) op(s) {flex or ''} that {who} does not "
                         "link; reconvert with TFLITE_BUILTINS only (replace the op), or run it with a runtime "
                         "that links the Flex delegate")
    found = re.search(r"builtin opcode '(\w+)' version '(\d+)'", text)
    if found:
        return JobFailed("unsupported_op", f"the model needs {found.group(1)} version {found.group(2)}, which "
                         f"{who} does not have (the model was made by a newer converter); use a newer runtime "
                         "(e.g. ai-edge-litert) or convert with a converter as old as the runtime")
    if "not a valid Flatbuffer" in text or "Model provided has model identifier" in text \
            or isinstance(exc, UnicodeDecodeError):
        return JobFailed("not_a_model", f"{who} cannot read the model: {first_line(exc)}; pass a .tflite "
                         "file produced by a TFLite converter")
    return JobFailed("runtime_error", f"{who} failed in {what}: {type(exc).__name__}: {first_line(exc)}")
