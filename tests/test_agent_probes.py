"""Environment and memory probes. This VM has no cpufreq and no thermal zones, so those are read from a
sysfs-shaped folder (the one thing that cannot exist here); everything else is this machine's own."""

import os
import platform

import pytest

from agent import probes
from agent.worker import _add_environment_warnings


def test_the_environment_has_every_design_key_with_typed_values():
    env = probes.environment()
    assert set(env) == {"hostname", "arch", "cpu_model", "cpu_count", "governor", "freq_mhz", "temp_c_before",
                        "temp_c_after", "loadavg", "mem_total_kb", "kernel", "python"}
    assert env["arch"] == platform.machine() and env["cpu_count"] == os.cpu_count()
    assert env["python"] == platform.python_version() and env["kernel"] == platform.release()
    assert isinstance(env["mem_total_kb"], int) and env["mem_total_kb"] > 100_000
    assert isinstance(env["freq_mhz"], (int, type(None)))
    assert all(isinstance(x, float) for x in env["loadavg"])


def test_missing_cpufreq_and_thermal_files_give_none(monkeypatch, tmp_path):
    monkeypatch.setattr(probes, "_CPU", tmp_path / "nocpufreq")
    monkeypatch.setattr(probes, "_THERMAL", tmp_path / "nothermal")
    assert probes.governor() is None
    assert probes.temperature_c() is None


def test_a_board_sysfs_is_read_as_typed_values(monkeypatch, tmp_path):
    cpufreq = tmp_path / "cpu0" / "cpufreq"
    cpufreq.mkdir(parents=True)
    (cpufreq / "scaling_governor").write_text("ondemand\n")
    (cpufreq / "scaling_cur_freq").write_text("1800000\n")
    thermal = tmp_path / "thermal"
    for i, milli in enumerate(["41000", "57500", "garbage", "999999"]):  # the hottest sane zone wins
        (thermal / f"thermal_zone{i}").mkdir(parents=True)
        (thermal / f"thermal_zone{i}" / "temp").write_text(milli + "\n")
    monkeypatch.setattr(probes, "_CPU", cpufreq)
    monkeypatch.setattr(probes, "_THERMAL", thermal)
    assert probes.governor() == "ondemand"
    assert probes.freq_mhz() == 1800
    assert probes.temperature_c() == 57.5


def test_memory_from_proc_and_from_psutil_agree(monkeypatch):
    from_proc = probes.memory_kb()
    assert 0 < from_proc["rss_kb"] <= from_proc["peak_kb"]
    real_read = probes._read
    monkeypatch.setattr(probes, "_read", lambda p: None if str(p) == "/proc/self/status" else real_read(p))
    from_psutil = probes.memory_kb()
    assert from_psutil["rss_kb"] == pytest.approx(from_proc["rss_kb"], rel=0.2)
    assert from_psutil["peak_kb"] >= from_psutil["rss_kb"] * 0.8


def test_without_proc_or_psutil_only_the_peak_is_known(monkeypatch):
    monkeypatch.setattr(probes, "_read", lambda p: None)
    monkeypatch.setattr(probes, "_has_psutil", lambda: False)
    monkeypatch.delitem(__import__("sys").modules, "psutil", raising=False)
    memory = probes.memory_kb()
    assert memory["rss_kb"] is None and memory["peak_kb"] > 10_000  # ru_maxrss, KiB on Linux


@pytest.mark.parametrize("before,after,warned", [(45.0, 56.0, True), (45.0, 54.0, False), (None, 80.0, False)])
def test_a_temperature_rise_of_ten_degrees_suspects_throttling(before, after, warned):
    doc = {"env": {"temp_c_before": before, "temp_c_after": after}, "warnings": []}
    _add_environment_warnings(doc)
    assert any("throttling" in w for w in doc["warnings"]) == warned
