"""The one way to do something on many devices at once (in the spirit of fabric's Group / GroupResult).

:func:`run_group` calls ``work(device)`` for every device, at most ``parallel`` at a time, each in its
own thread, and waits at most ``deadline`` seconds. Every device is tried; the result maps each device
to an :class:`Outcome` (its value, or the reason and kind it failed), and :meth:`GroupResult.exit_code`
is the ONE rule that turns outcomes into the exit code of ``run``, ``devices --check``, ``bootstrap``
and ``nightly``:

- ``INTERRUPTED`` after Ctrl-C / SIGTERM (what finished is kept);
- ``NO_DEVICE`` when every device failed and each could not be reached at all
  (:data:`UNREACHABLE_KINDS`: unreachable, auth refused, host key, config, no answer in time);
- ``PARTIAL`` when any device failed (or the caller says some of its jobs did);
- ``OK`` otherwise.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.defaults import PARALLEL_DEVICES
from controller.errors import DeviceError, ExitCode
from controller.fleet.inventory import Device

log = logging.getLogger(__name__)

#: failure kinds that mean the device could not be reached at all (for the NO_DEVICE exit code)
UNREACHABLE_KINDS = ("unreachable", "auth", "host_key", "config", "no_answer")
JOIN_SLICE = 0.5  #: seconds between checks for Ctrl-C while waiting for the device threads


@dataclass
class Outcome:
    """What happened on one device."""

    device: str
    ok: bool = False
    value: Any = None  #: what ``work`` returned (also on failure when the device recorded a status)
    reason: str | None = None
    kind: str | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return not self.ok


@dataclass
class GroupResult:
    """Per-device outcomes of one group call, in the devices' order."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def succeeded(self) -> dict[str, Outcome]:
        return {n: o for n, o in self.outcomes.items() if o.ok}

    @property
    def failed(self) -> dict[str, Outcome]:
        return {n: o for n, o in self.outcomes.items() if not o.ok}

    def exit_code(self, jobs_failed: bool = False) -> ExitCode:
        """The exit code of a fleet command (see the module docstring); ``jobs_failed``: some job on a
        device that itself succeeded failed or was skipped."""
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.outcomes and all(not o.ok and o.kind in UNREACHABLE_KINDS for o in self.outcomes.values()):
            return ExitCode.NO_DEVICE
        if self.failed or jobs_failed:
            return ExitCode.PARTIAL
        return ExitCode.OK


def run_group(devices: Sequence[Device], work: Callable[[Device], Any], *, parallel: int = PARALLEL_DEVICES,
              deadline: float | None = None, on_interrupt: Callable[[], None] | None = None,
              label: str = "device") -> GroupResult:
    """Call ``work(device)`` for each device (at most ``parallel`` at once) and collect the outcomes.

    ``work`` returns a value (the device succeeded) or raises :class:`DeviceError` (failed with its
    reason and kind; a ``DeviceError`` may carry ``.value``, e.g. the device's status). Any other
    exception is a bug: it is logged with its traceback and recorded as kind ``internal``, and the other
    devices go on. A device still working after ``deadline`` seconds is recorded as failed, kind
    ``no_answer`` (its thread is left to its own transport deadlines). On Ctrl-C ``on_interrupt()`` is
    called to stop the work in flight and the result is marked interrupted; this function then returns
    (it never raises KeyboardInterrupt).
    """
    result = GroupResult({d.name: Outcome(d.name) for d in devices})
    done: dict[str, bool] = {}
    slots = threading.Semaphore(max(1, parallel))
    lock = threading.Lock()

    def one(device: Device) -> None:
        outcome = Outcome(device.name)
        start = time.monotonic()
        try:
            with slots:
                outcome.value = work(device)
                outcome.ok = True
        except DeviceError as exc:
            outcome.reason, outcome.kind = exc.reason, exc.kind
            outcome.value = getattr(exc, "value", None)
        except Exception as exc:  # a bug must not take the other devices down; it is recorded
            log.exception("%s: internal error", device.name)
            outcome.reason, outcome.kind = f"internal error: {type(exc).__name__}: {exc}", "internal"
        finally:
            outcome.seconds = time.monotonic() - start
            with lock:
                if device.name not in done:
                    result.outcomes[device.name] = outcome
                    done[device.name] = True

    threads = [threading.Thread(target=one, args=(d,), name=f"{label}-{d.name}", daemon=True) for d in devices]
    end = None if deadline is None else time.monotonic() + deadline
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive() and (end is None or time.monotonic() < end):
                thread.join(JOIN_SLICE if end is None else max(0.0, min(JOIN_SLICE, end - time.monotonic())))
    except KeyboardInterrupt:
        result.interrupted = True
        if on_interrupt is not None:
            on_interrupt()
        for thread in threads:  # closed transports make the work unwind quickly; bounded wait
            thread.join(timeout=5.0)
    with lock:
        for device in devices:
            if device.name not in done:
                done[device.name] = True
                reason = "interrupted" if result.interrupted else f"no answer within {deadline:g} s"
                result.outcomes[device.name] = Outcome(device.name, reason=reason,
                                                       kind="interrupted" if result.interrupted else "no_answer")
    return result
