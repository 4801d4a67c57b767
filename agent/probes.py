"""Small probes of the device and of this process. Each returns None for what the device does not
expose (no cpufreq on a VM, no thermal zone in a container) instead of failing.

Memory comes from ``/proc/self/status`` (VmRSS, VmHWM); where there is no /proc, from psutil when it
is installed, else from ``resource.getrusage`` (peak only). Standard library only.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

_CPU = Path("/sys/devices/system/cpu/cpu0/cpufreq")
_THERMAL = Path("/sys/class/thermal")
#: Where sysfs readers that take a root look by default. Set EDGEBENCH_AGENT_SYSFS_ROOT to read a sysfs
#: tree mounted elsewhere (a container with the host's /sys bind-mounted; the tests' board-shaped trees).
SYSFS_ROOT_ENV = "EDGEBENCH_AGENT_SYSFS_ROOT"


def sysfs_root() -> Path:
    """The root under which ``sys/devices/...`` and ``sys/class/...`` are read ("/" unless
    EDGEBENCH_AGENT_SYSFS_ROOT says otherwise)."""
    return Path(os.environ.get(SYSFS_ROOT_ENV) or "/")


def read_text(path: Path) -> str | None:
    """The stripped text of ``path``, or None when it cannot be read (missing, permission, not text)."""
    return _read(path)


def read_int(path: Path) -> int | None:
    """The integer in ``path``, or None when it is missing or not an integer."""
    return _int(_read(path))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def cpu_model() -> str | None:
    """``model name`` from /proc/cpuinfo (x86), or ``Model`` / ``Hardware`` (ARM boards), or
    platform.processor()."""
    text = _read(Path("/proc/cpuinfo")) or ""
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware", "cpu model") and key not in found:
            found[key] = value.strip()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if found.get(key):
            return found[key]
    return platform.processor() or None


def governor() -> str | None:
    return _read(_CPU / "scaling_governor")


def cpufreq_reading(cpufreq: Path) -> tuple:
    """(MHz, source) of one CPU's cpufreq folder: the hardware's ``cpuinfo_cur_freq`` when readable
    (often root only), else the governor's ``scaling_cur_freq``; (None, None) without cpufreq."""
    for source in ("cpuinfo_cur_freq", "scaling_cur_freq"):
        khz = _int(_read(cpufreq / source))
        if khz:
            return round(khz / 1000), source
    return None, None


def freq_mhz() -> int | None:
    """Current frequency of cpu0 in MHz (cpufreq), else the ``cpu MHz`` line of /proc/cpuinfo."""
    mhz, _ = cpufreq_reading(_CPU)
    if mhz:
        return mhz
    for line in (_read(Path("/proc/cpuinfo")) or "").splitlines():
        if line.startswith("cpu MHz"):
            try:
                return round(float(line.partition(":")[2]))
            except ValueError:
                return None
    return None


def temperature_c() -> float | None:
    """Highest thermal zone temperature in degrees C (CPU zones on boards), or None without zones."""
    return hottest_zone(_THERMAL)[0]


def hottest_zone(thermal: Path) -> tuple:
    """(degrees C, zone type) of the hottest sane zone under ``thermal`` (a /sys/class/thermal folder),
    or (None, None) without readable zones. Readings outside -40..150 C are ignored (broken sensors)."""
    best: tuple = (None, None)
    try:
        zones = sorted(thermal.glob("thermal_zone*"))[:64]
    except OSError:
        return best
    for zone in zones:
        milli = _int(_read(zone / "temp"))
        if milli is not None and -40_000 < milli < 150_000 and (best[0] is None or milli / 1000.0 > best[0]):
            best = (milli / 1000.0, _read(zone / "type") or zone.name)
    return best


def mem_total_kb() -> int | None:
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        if line.startswith("MemTotal:"):
            return _int(line.split()[1])
    return None


def loadavg() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict:
    """The result document's ``env`` (DESIGN.md keys). ``temp_c_after`` is filled in after the job."""
    return {
        "hostname": platform.node(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "governor": governor(),
        "freq_mhz": freq_mhz(),
        "temp_c_before": temperature_c(),
        "temp_c_after": None,
        "loadavg": loadavg(),
        "mem_total_kb": mem_total_kb(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def memory_kb() -> dict:
    """This process's ``rss_kb`` (now) and ``peak_kb`` (high-water mark), None where unknown."""
    status = _read(Path("/proc/self/status"))
    if status:
        values = {}
        for line in status.splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line[:5]] = _int(line.split()[1])
        if values:
            return {"rss_kb": values.get("VmRSS"), "peak_kb": values.get("VmHWM")}
    if "psutil" in sys.modules or _has_psutil():
        import psutil

        info = psutil.Process().memory_info()
        peak = getattr(info, "peak_wset", None)
        return {"rss_kb": info.rss // 1024, "peak_kb": peak // 1024 if peak else _ru_maxrss_kb()}
    return {"rss_kb": None, "peak_kb": _ru_maxrss_kb()}


def reset_peak() -> int | None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux: write 5 to
    /proc/self/clear_refs) and return that RSS in KiB; None where the kernel does not allow it (then the
    peak is not reset)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return memory_kb()["rss_kb"]


def _has_psutil() -> bool:
    import importlib.util

    return importlib.util.find_spec("psutil") is not None


def _ru_maxrss_kb() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


def disk_free_kb(path: str) -> int | None:
    try:
        stat = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return stat.f_bavail * stat.f_frsize // 1024
