"""TFLite runtimes: which ones this device has, their versions, and loading a model with one.

Discovery order for ``auto``: ai-edge-litert, then tflite-runtime, then TensorFlow's ``tf.lite``.
:func:`available` answers without importing anything (``importlib.util.find_spec`` + package metadata),
so ``info`` and ``--help`` stay cheap; :func:`load` imports the runtime (in the worker process).

XNNPACK is the default delegate of all three; ``xnnpack=False`` asks for
``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``. External delegates load through the runtime's
``load_delegate`` (:mod:`agent.delegation`, which also counts what the delegates took).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

from agent.errors import JobFailed, NoRuntimeError


@dataclass(frozen=True)
class RuntimeSpec:
    name: str  #: the name used in jobs and results
    module: str  #: the module to import
    distributions: tuple  #: pip distribution names that may provide it (first found gives the version)


RUNTIMES = (
    RuntimeSpec("ai-edge-litert", "ai_edge_litert.interpreter", ("ai-edge-litert",)),
    RuntimeSpec("tflite-runtime", "tflite_runtime.interpreter", ("tflite-runtime",)),
    RuntimeSpec("tensorflow", "tensorflow", ("tensorflow", "tensorflow-cpu", "tf-nightly",
                                             "tensorflow-aarch64", "tensorflow-intel")),
)
BY_NAME = {spec.name: spec for spec in RUNTIMES}


def _installed(spec: RuntimeSpec) -> bool:
    top = spec.module.split(".")[0]
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def distribution_version(spec: RuntimeSpec) -> str | None:
    """Version of the installed distribution providing ``spec``, from package metadata, or None."""
    from importlib import metadata

    for dist in spec.distributions:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def available() -> list[dict]:
    """Every known runtime with ``name``, ``module``, ``installed`` and ``version`` (no imports)."""
    found = []
    for spec in RUNTIMES:
        installed = _installed(spec)
        found.append({"name": spec.name, "module": spec.module, "installed": installed,
                      "version": distribution_version(spec) if installed else None})
    return found


def choose(requested: str) -> RuntimeSpec:
    """The runtime to use for ``requested`` ("auto" or a name), without importing it.

    Raises NoRuntimeError naming what is installed when the requested runtime (or, for auto, any
    runtime) is not installed.
    """
    if requested == "auto":
        for spec in RUNTIMES:
            if _installed(spec):
                return spec
        raise NoRuntimeError("no TFLite runtime is installed: pip install ai-edge-litert "
                             "(or tflite-runtime, or tensorflow) for this device's python")
    if requested not in BY_NAME:
        raise NoRuntimeError(f"unknown runtime {requested!r}; choose one of auto, {', '.join(BY_NAME)}")
    spec = BY_NAME[requested]
    if not _installed(spec):
        found = [s.name for s in RUNTIMES if _installed(s)] or ["none"]
        raise NoRuntimeError(f"runtime {requested} is not installed on this device (installed: "
                             f"{', '.join(found)}); pip install {spec.distributions[0]} or pick another")
    return spec


@dataclass
class LoadedRuntime:
    """An imported runtime: its Interpreter class and how to turn XNNPACK off."""

    spec: RuntimeSpec
    version: str | None
    interpreter_class: Callable[..., Any]
    no_default_delegates: Any  #: the OpResolverType value that disables XNNPACK, or None
    load_delegate: Callable[..., Any] | None = None  #: the runtime's load_delegate(library, options)

    def interpreter(self, model_path: str, num_threads: int, xnnpack: bool, delegates: list | None = None) -> Any:
        """Construct an Interpreter for ``model_path`` (not yet allocated) with the external ``delegates``
        (objects of :attr:`load_delegate`) applied. The runtime may raise."""
        kwargs: dict = {"model_path": model_path, "num_threads": num_threads}
        if not xnnpack:
            if self.no_default_delegates is None:
                raise JobFailed("runtime_error", f"{self.spec.name} {self.version} cannot turn the default "
                                "XNNPACK delegate off; run with XNNPACK or use another runtime")
            kwargs["experimental_op_resolver_type"] = self.no_default_delegates
        if delegates:
            kwargs["experimental_delegates"] = list(delegates)
        return self.interpreter_class(**kwargs)


def load(spec: RuntimeSpec) -> LoadedRuntime:
    """Import ``spec``'s runtime. Raises JobFailed(kind="no_runtime") with the import error when it fails
    (e.g. tflite-runtime built against numpy 1 under numpy 2)."""
    try:
        module = importlib.import_module(spec.module)
    except Exception as exc:  # an import of a native extension can raise anything; all mean "unusable"
        raise JobFailed("no_runtime", f"cannot import {spec.module} ({spec.name}): "
                        f"{type(exc).__name__}: {exc}; reinstall it for this python / numpy") from exc
    if spec.name == "tensorflow":
        lite = module.lite
        interpreter_class = lite.Interpreter
        resolver = getattr(getattr(lite, "experimental", None), "OpResolverType", None)
        load_delegate = getattr(getattr(lite, "experimental", None), "load_delegate", None)
        version = getattr(module, "__version__", None)
    else:
        interpreter_class = module.Interpreter
        resolver = getattr(module, "OpResolverType", None)
        load_delegate = getattr(module, "load_delegate", None)
        package = importlib.import_module(spec.module.split(".")[0])
        version = getattr(package, "__version__", None)
    version = version or distribution_version(spec)  # metadata only as a fallback: it imports email & co
    no_default = getattr(resolver, "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None) if resolver else None
    return LoadedRuntime(spec, version, interpreter_class, no_default, load_delegate)


def load_requested(requested: str) -> LoadedRuntime:
    """Import the runtime ``requested`` names; for "auto", the first installed one (discovery order) that
    imports. Raises JobFailed(kind="no_runtime") saying what is installed and why each failed."""
    try:
        first = choose(requested)
    except NoRuntimeError as exc:
        raise JobFailed("no_runtime", str(exc)) from exc
    if requested != "auto":
        return load(first)
    failures = []
    for spec in RUNTIMES[RUNTIMES.index(first):]:
        if not _installed(spec):
            continue
        try:
            return load(spec)
        except JobFailed as exc:
            failures.append(str(exc))
    raise JobFailed("no_runtime", "no installed TFLite runtime imports: " + " | ".join(failures))
