"""Exceptions and exit codes of the agent.

One root (:class:`AgentError`). A bad *model* is never an exception that escapes the agent: it becomes
a result document with status ``error`` / ``crashed`` / ``timeout``. These exceptions are for things the
caller got wrong (usage) or the device cannot do at all (no runtime).
"""

import enum


class ExitCode(enum.IntEnum):
    """Exit codes of ``python -m agent`` (documented in README)."""

    OK = 0  #: every job finished with status ok
    JOB_FAILED = 1  #: a result document was produced, but some job's status is error/crashed/timeout
    USAGE = 2  #: bad arguments, a file that does not exist, an unreadable job file
    NO_RUNTIME = 3  #: no TFLite runtime can be imported on this device (or not the one asked for)
    BUSY = 4  #: the device lock could not be taken before its deadline (or another daemon owns the workdir)
    DISK_FULL = 5  #: batch: the disk filled up; finished documents kept, the rest of the batch not run
    NO_DAEMON = 6  #: daemon-client: no agent daemon answers on that workdir
    INTERNAL = 70  #: a bug in the agent
    INTERRUPTED = 130  #: Ctrl-C / SIGINT; batch results written so far are kept


class AgentError(Exception):
    """Root of the agent's exceptions. ``exit_code`` says how the CLI ends."""

    exit_code = ExitCode.INTERNAL


class UsageError(AgentError):
    exit_code = ExitCode.USAGE


class NoRuntimeError(AgentError):
    exit_code = ExitCode.NO_RUNTIME


class BusyError(AgentError):
    exit_code = ExitCode.BUSY


class DiskFullError(AgentError):
    """The device's disk filled up during a batch. The message holds the free space and the fix."""

    exit_code = ExitCode.DISK_FULL


class SchemaError(AgentError, ValueError):
    """A result document this version cannot read: not a document, or a newer schema_version."""

    exit_code = ExitCode.USAGE


class JobFailed(AgentError):
    """Raised inside a worker when the job cannot be measured (bad model, bad inputs, runtime error).

    Never escapes the worker: it becomes a result document with status ``error`` and
    ``error.kind = kind`` (one of the kinds listed in ``agent.schema``). The message says what to do.
    """

    exit_code = ExitCode.JOB_FAILED

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
