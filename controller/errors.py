"""Exceptions of the controller and the exit codes they map to (in one place: ``cli.main``).

User errors (bad command line, config, input files) vs device errors vs measurement errors. A failed
*job* is data in the results, never one of these exceptions: the fleet finishes every device first.
"""

import enum


class ExitCode(enum.IntEnum):
    """Exit codes of ``edgebench`` (documented in README)."""

    OK = 0  #: everything asked for succeeded
    PARTIAL = 1  #: some jobs or devices failed; the others' results are kept
    USAGE = 2  #: bad command line, bad devices.yaml, bad input file (model, data, manifest)
    NO_DEVICE = 3  #: no selected device was reachable
    TOOL = 4  #: a tool edgebench drives failed (converter, quantizer) or an optional extra is missing
    REGRESSION = 5  #: compare / nightly: a (confirmed) regression
    DRIFT = 6  #: run: a variant's outputs drifted from fp32 past the thresholds (--top1-drop, --min-cosine)
    INTERNAL = 70  #: a bug in edgebench; the message says where the traceback was written
    INTERRUPTED = 130  #: Ctrl-C or SIGTERM; completed results are kept


class EdgebenchError(Exception):
    """Root of the controller's exceptions. The message says what went wrong and what to do."""

    exit_code = ExitCode.INTERNAL


class UsageError(EdgebenchError):
    """Bad command line."""

    exit_code = ExitCode.USAGE


class ConfigError(EdgebenchError):
    """devices.yaml / inventory invalid: the message names the file, the device and the key."""

    exit_code = ExitCode.USAGE


class InputError(EdgebenchError):
    """An input file is missing or not what it should be (model, data set, manifest)."""

    exit_code = ExitCode.USAGE


class ToolError(EdgebenchError):
    """The converter / quantizer failed, or the extra it needs is not installed."""

    exit_code = ExitCode.TOOL


class DeviceError(EdgebenchError):
    """A device could not be used: unreachable, auth refused, host key unknown/changed, disk full,
    python missing. Carries the device name; the fleet records it and goes on with the others."""

    exit_code = ExitCode.PARTIAL

    def __init__(self, device: str, message: str, *, kind: str = "device"):
        super().__init__(f"{device}: {message}")
        self.device = device
        self.reason = message
        self.kind = kind
        self.value: object = None  #: what the device had done when it failed (e.g. its run status)


class HostKeyError(DeviceError):
    """Unknown or changed host key. The message shows the fingerprint and how to trust it."""


class NoDeviceError(EdgebenchError):
    exit_code = ExitCode.NO_DEVICE


class NightlyBusyError(NoDeviceError):
    """Another ``edgebench nightly`` holds the reports folder's nightly lock: this one did not start (the
    devices are taken, as for NO_DEVICE)."""
