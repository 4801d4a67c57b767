"""Where a job runs: the CPU clusters of this machine and the ``cpus`` placement of a job.

A placement is ``all``, ``big``, ``little`` or a Linux CPU list (``0,2-3``). Clusters are read from
sysfs under a root folder (``<root>/sys/devices/system/cpu``): CPUs are grouped by ``cpu_capacity``
(ARM's relative performance figure), else by ``cpufreq/cpuinfo_max_freq``; ``little`` is the group of
the lowest value, ``big`` that of the highest. A machine without either (or with one value for every
CPU) has one cluster, and ``big`` = ``little`` = every online CPU. The worker pins itself with
``os.sched_setaffinity`` before it imports the runtime, so the runtime's threads inherit the pinning.
Standard library only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from agent.errors import UsageError
from agent.probes import read_int, read_text

NAMED = ("all", "big", "little")
_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def cpu_folder(root: Path) -> Path:
    return Path(root) / "sys" / "devices" / "system" / "cpu"


def parse_cpulist(text: str) -> list[int]:
    """The sorted CPU ids of a Linux CPU list (``0-3,6``). Raises ValueError on anything else."""
    text = text.strip()
    if not _LIST.match(text):
        raise ValueError(f"{text!r} is not a CPU list like 0,2-3")
    ids: set = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if last < first:
            raise ValueError(f"{part!r}: a range must go up (e.g. 2-3)")
        ids.update(range(first, last + 1))
    return sorted(ids)


def check_placement(cpus: str | None) -> None:
    """Raise UsageError unless ``cpus`` is None, all, big, little or a CPU list (syntax only: which CPUs
    exist is known on the device)."""
    if cpus is None or cpus in NAMED:
        return
    try:
        parse_cpulist(str(cpus))
    except ValueError as exc:
        raise UsageError(f"cpus {cpus!r}: give all, big, little or a CPU list like 0,2-3 ({exc})") from exc


def online_cpus(root: Path) -> list[int]:
    """Online CPU ids from ``<root>/sys/devices/system/cpu/online``, else the ``cpuN`` folders, else
    ``range(os.cpu_count())``."""
    folder = cpu_folder(root)
    text = read_text(folder / "online")
    if text:
        try:
            return parse_cpulist(text)
        except ValueError:
            pass
    try:
        found = sorted(int(p.name[3:]) for p in folder.glob("cpu[0-9]*") if p.name[3:].isdigit())
    except OSError:
        found = []
    return found or list(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class Cluster:
    name: str  #: little, mid, mid2 ..., big; "all" when the machine has one cluster
    cpus: tuple  #: CPU ids, sorted
    capacity: int | None  #: the shared cpu_capacity or cpuinfo_max_freq (kHz) value, None when unknown
    source: str | None  #: "cpu_capacity", "cpuinfo_max_freq" or None


def clusters(root: Path) -> list[Cluster]:
    """The clusters of the online CPUs, slowest first (see the module docstring for the rule)."""
    online = online_cpus(root)
    folder = cpu_folder(root)
    for source, relative in (("cpu_capacity", "cpu_capacity"), ("cpuinfo_max_freq", "cpufreq/cpuinfo_max_freq")):
        values = {cpu: read_int(folder / f"cpu{cpu}" / relative) for cpu in online}
        if all(v is not None for v in values.values()):
            distinct = sorted(set(values.values()))
            if len(distinct) == 1:
                return [Cluster("all", tuple(online), distinct[0], source)]
            names = _names(len(distinct))
            return [Cluster(name, tuple(c for c in online if values[c] == value), value, source)
                    for name, value in zip(names, distinct)]
    return [Cluster("all", tuple(online), None, None)]


def _names(count: int) -> list[str]:
    if count == 2:
        return ["little", "big"]
    return ["little"] + [("mid" if count == 3 else f"mid{i}") for i in range(1, count - 1)] + ["big"]


def resolve(cpus: str | None, root: Path) -> list[int] | None:
    """The CPU ids a placement names on this machine; None for no placement (``cpus`` None).

    Raises UsageError for a bad placement or a CPU that is not online here (naming the online ones).
    """
    if cpus is None:
        return None
    check_placement(cpus)
    groups = clusters(root)
    if cpus == "all":
        return sorted(c for g in groups for c in g.cpus)
    if cpus == "little":
        return list(groups[0].cpus)
    if cpus == "big":
        return list(groups[-1].cpus)
    ids = parse_cpulist(cpus)
    online = online_cpus(root)
    missing = sorted(set(ids) - set(online))
    if missing:
        raise UsageError(f"cpus {cpus!r}: CPU(s) {missing} are not online on this device (online: "
                         f"{_compact(online)}); choose among them, or use big / little / all")
    return ids


def label(ids: list[int], groups: list[Cluster]) -> str:
    """The cluster ``ids`` fall in: its name; ``all`` for every online CPU (or a one-cluster machine);
    ``mixed`` when they span clusters without being all of them."""
    chosen = set(ids)
    if len(groups) == 1 or chosen == {c for g in groups for c in g.cpus}:
        return "all"
    for group in groups:
        if chosen <= set(group.cpus):
            return group.name
    return "mixed"


def _compact(ids: list[int]) -> str:
    """0,1,2,3,6 -> "0-3,6"."""
    parts, start = [], None
    for i, cpu in enumerate(ids):
        if start is None:
            start = cpu
        if i + 1 == len(ids) or ids[i + 1] != cpu + 1:
            parts.append(str(start) if start == cpu else f"{start}-{cpu}")
            start = None
    return ",".join(parts)


def pin(ids: list[int] | None) -> list[int]:
    """Pin this process (and the threads it starts later) to ``ids`` when given; return the CPU ids it
    may run on afterwards. Raises UsageError when the kernel refuses the set."""
    if ids is not None:
        try:
            os.sched_setaffinity(0, ids)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot pin to CPUs {ids}: {exc}") from exc
    return sorted(os.sched_getaffinity(0))
