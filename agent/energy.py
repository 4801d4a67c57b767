"""Energy per inference where the board can tell: RAPL, hwmon energy counters, or sampled hwmon power.

Sources, in the order they are looked for under a root folder (``<root>/sys/class/...``):

1. ``powercap`` RAPL zones (``energy_uj``, wrapping at ``max_energy_range_uj``): the ``psys`` zone
   alone when present (the whole platform), else the sum of the top-level zones (``intel-rapl:N``,
   one per package; sub-zones are inside them and are not added again).
2. ``hwmon*/energy*_input`` counters (microjoules), summed.
3. ``hwmon*/power*_input`` (microwatts), sampled at ``SAMPLE_HZ`` by a thread and integrated
   (trapezoids). Sampling needs a thread, so the worker runs it in a pass of its own after the timed
   loop (the timed loop stays clean); counters are only read before and after the timed loop.

Idle power is measured just before the job (``IDLE_SECONDS`` of sleep) and subtracted:
``mj_per_inference = (energy - idle_power * seconds) / inferences``. Standard library only; clocks
and sleeps are the real ones (tests drive a sysfs tree that a thread changes).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.probes import read_int, read_text

SAMPLE_HZ = 20.0
IDLE_SECONDS = 0.5
PASS_SECONDS = 1.0  #: length of the sampled-power pass (power sources only)
NO_SENSOR = ("no energy sensor: no RAPL zone under /sys/class/powercap, no hwmon energy*_input or "
             "power*_input")


@dataclass
class Meter:
    """One energy source. ``sampled`` sources (power) need :class:`PowerSampler`; counters do not."""

    source: str  #: "rapl:<zones>", "hwmon-energy:<files>" or "hwmon-power:<files>" (names for people)
    files: list  #: the energy_uj / energy*_input / power*_input paths
    sampled: bool
    wrap_uj: list = field(default_factory=list)  #: per counter file: its wrap range (None: unknown)

    def read_counters(self) -> list:
        """Every counter's value (microjoules). Raises OSError naming a counter that cannot be read."""
        values = []
        for path in self.files:
            value = read_int(path)
            if value is None:
                raise OSError(f"cannot read the energy counter {path}")
            values.append(value)
        return values

    def delta_uj(self, before: list, after: list) -> int:
        """Energy between two ``read_counters`` results, unwrapping each counter that wrapped once.
        Raises OSError when a counter went backwards and its wrap range is unknown."""
        total = 0
        for path, wrap, b, a in zip(self.files, self.wrap_uj, before, after):
            if a < b:
                if not wrap:
                    raise OSError(f"the energy counter {path} went backwards ({b} -> {a}) and has no known wrap range")
                a += wrap
            total += a - b
        return total

    def read_power_uw(self) -> int:
        """The summed power of every power file (microwatts). Raises OSError when one cannot be read."""
        return sum(self.read_counters())


def find(root: Path) -> Meter | None:
    """The first energy source under ``root`` (see the module docstring), or None (reason: NO_SENSOR)."""
    root = Path(root)
    powercap = root / "sys" / "class" / "powercap"
    zones = [z for z in _glob(powercap, "*") if (z / "energy_uj").exists()]
    psys = [z for z in zones if read_text(z / "name") == "psys"]
    top = psys or [z for z in zones if z.name.count(":") == 1]
    if top:
        return Meter("rapl:" + ",".join(read_text(z / "name") or z.name for z in top),
                     [z / "energy_uj" for z in top], False, [read_int(z / "max_energy_range_uj") for z in top])
    hwmon = root / "sys" / "class" / "hwmon"
    energy = [f for d in _glob(hwmon, "hwmon*") for f in _glob(d, "energy*_input")]
    if energy:
        return Meter("hwmon-energy:" + ",".join(_label(f) for f in energy), energy, False, [None] * len(energy))
    power = [f for d in _glob(hwmon, "hwmon*") for f in _glob(d, "power*_input")]
    if power:
        return Meter("hwmon-power:" + ",".join(_label(f) for f in power), power, True, [None] * len(power))
    return None


def _glob(folder: Path, pattern: str) -> list:
    try:
        return sorted(folder.glob(pattern))
    except OSError:
        return []


def _label(path: Path) -> str:
    return f"{read_text(path.parent / 'name') or path.parent.name}/{path.name}"


class PowerSampler:
    """Samples a power meter at ``hz`` in a thread; :meth:`stop` returns (microjoules, seconds)."""

    def __init__(self, meter: Meter, hz: float = SAMPLE_HZ):
        self.meter, self.period = meter, 1.0 / hz
        self._stop = threading.Event()
        self._points: list = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="power-sampler", daemon=True)

    def start(self) -> PowerSampler:
        self._sample()
        self._thread.start()
        return self

    def _sample(self) -> None:
        self._points.append((time.monotonic(), self.meter.read_power_uw()))

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.period):
                self._sample()
        except OSError as exc:
            self._error = exc

    def stop(self) -> tuple:
        """Stop sampling; (microjoules integrated, seconds covered, number of samples). Raises the
        OSError a sample met."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        if self._error is not None:
            raise self._error
        self._sample()
        points = self._points
        energy = sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in zip(points, points[1:]))
        return energy, points[-1][0] - points[0][0], len(points)


def idle_uw(meter: Meter, seconds: float = IDLE_SECONDS) -> float:
    """Mean power (microwatts) over ``seconds`` of sleep. Raises OSError when the meter cannot be read."""
    if meter.sampled:
        sampler = PowerSampler(meter).start()
        time.sleep(seconds)
        energy, covered, _ = sampler.stop()
    else:
        t0, before = time.monotonic(), meter.read_counters()
        time.sleep(seconds)
        after, covered = meter.read_counters(), time.monotonic() - t0
        energy = meter.delta_uj(before, after)
    return energy / covered if covered > 0 else 0.0


def result(meter: Meter | None, idle: float | None, energy_uj: float | None, seconds: float | None,
           inferences: int | None, reason: str | None = None) -> dict:
    """The result document's ``energy``: ``{"mj_per_inference", "source", "idle_mw", "active_mw",
    "inferences", "seconds", "reason"}``; ``mj_per_inference`` is None with a ``reason`` when it could
    not be measured (no sensor, an unreadable counter, active power not above idle)."""
    doc = {"mj_per_inference": None, "source": meter.source if meter else None,
           "idle_mw": idle / 1000.0 if idle is not None else None, "active_mw": None,
           "inferences": inferences, "seconds": seconds, "reason": reason}
    if meter is None:
        doc["reason"] = reason or NO_SENSOR
        return doc
    if reason or energy_uj is None or not seconds or not inferences or idle is None:
        doc["reason"] = reason or "not measured"
        return doc
    doc["active_mw"] = energy_uj / seconds / 1000.0
    above_idle_uj = energy_uj - idle * seconds
    if above_idle_uj <= 0:
        doc["reason"] = (f"active power {doc['active_mw']:.1f} mW is not above idle {doc['idle_mw']:.1f} mW: the "
                         "sensor cannot resolve this model's energy; measure longer (--min-seconds)")
        return doc
    doc["mj_per_inference"] = above_idle_uj / inferences / 1000.0
    return doc

