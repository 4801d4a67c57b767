"""The state of the machine around a job, for the CPUs the job ran on (not just cpu0).

:func:`snapshot` is taken before and after every job: per CPU the governor and the frequency (the
hardware's ``cpuinfo_cur_freq`` when readable, else ``scaling_cur_freq``; ``freq_source`` says which),
the hottest thermal zone, the Raspberry Pi firmware's throttle bits (``vcgencmd get_throttled``, where
that program exists) and the load average. :func:`throttle_reasons` compares two snapshots. Everything
is read under a root folder (see :func:`agent.probes.sysfs_root`). Standard library only.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from agent.cpus import cpu_folder
from agent.probes import cpufreq_reading, hottest_zone, loadavg, read_text

VCGENCMD_TIMEOUT_S = 5.0
# Bits of `vcgencmd get_throttled` (Raspberry Pi firmware): "now" in the low half, "has occurred since
# boot" in the high half.
THROTTLE_NOW = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled", 3: "soft temperature limit"}
THROTTLE_OCCURRED_SHIFT = 16


def snapshot(cpus: list[int], root: Path) -> dict:
    """``{"cpus": [{"cpu", "governor", "freq_mhz"}], "freq_source", "temp_c", "thermal_zone",
    "throttle_bits", "loadavg"}``; None for whatever this machine does not expose."""
    folder = cpu_folder(root)
    per_cpu, sources = [], set()
    for cpu in cpus:
        cpufreq = folder / f"cpu{cpu}" / "cpufreq"
        mhz, source = cpufreq_reading(cpufreq)
        if source:
            sources.add(source)
        per_cpu.append({"cpu": cpu, "governor": read_text(cpufreq / "scaling_governor"), "freq_mhz": mhz})
    temp, zone = hottest_zone(Path(root) / "sys" / "class" / "thermal")
    return {
        "cpus": per_cpu,
        "freq_source": ",".join(sorted(sources)) or None,
        "temp_c": temp,
        "thermal_zone": zone,
        "throttle_bits": vcgencmd_throttled(),
        "loadavg": loadavg(),
    }


def governor_of(snap: dict) -> str | None:
    """The governor of the snapshot's CPUs: one name, ``mixed`` when they differ, None when unknown."""
    names = {c["governor"] for c in snap["cpus"] if c["governor"]}
    return None if not names else names.pop() if len(names) == 1 else "mixed"


def freq_of(snap: dict) -> int | None:
    """The lowest current frequency (MHz) among the snapshot's CPUs, None when unknown."""
    values = [c["freq_mhz"] for c in snap["cpus"] if c["freq_mhz"]]
    return min(values) if values else None


def parse_throttled(text: str) -> int | None:
    """The bit field of ``vcgencmd get_throttled`` output (``throttled=0x50005``), None if unparsable."""
    _, _, value = text.strip().partition("=")
    try:
        return int(value, 16)
    except ValueError:
        return None


def vcgencmd_throttled() -> int | None:
    """The firmware throttle bits, None where ``vcgencmd`` does not exist or does not answer."""
    program = shutil.which("vcgencmd")
    if program is None:
        return None
    try:
        proc = subprocess.run([program, "get_throttled"], capture_output=True, text=True,
                              timeout=VCGENCMD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_throttled(proc.stdout) if proc.returncode == 0 else None


def throttle_reasons(before: dict, after: dict) -> list[str]:
    """Why the firmware says the job may have been throttled: a "now" bit set after the job, or a
    "has occurred" bit that appeared during it. [] when nothing says so (or no vcgencmd)."""
    bits_after, bits_before = after.get("throttle_bits"), before.get("throttle_bits") or 0
    if bits_after is None:
        return []
    reasons = [f"{name} (now)" for bit, name in THROTTLE_NOW.items() if bits_after >> bit & 1]
    for bit, name in THROTTLE_NOW.items():
        occurred = bit + THROTTLE_OCCURRED_SHIFT
        if bits_after >> occurred & 1 and not bits_before >> occurred & 1:
            reasons.append(f"{name} (during the job)")
    return reasons
