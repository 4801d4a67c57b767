"""Energy per inference from RAPL, hwmon energy counters and sampled hwmon power.

No sensor exists on this VM, so the sensors are files in a sysfs-shaped folder (the one place a fake is
right); threads change them over time the way a kernel driver would. In the end-to-end tests the power
follows the real worker process (2 W, 9 W while it runs), so the idle subtraction and the per-inference
division meet a real measurement.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from agent import energy
from agent.probes import read_int
from agent.runner import RunnerOptions, run_job
from tests.test_agent_run import quick


def write(path: Path, value: int) -> None:
    """Atomically, like a sysfs read sees it: never half a number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


def rapl(root: Path, zones: dict, max_range: int = 262143328850) -> dict:
    """powercap zones name -> (folder name, energy_uj); returns name -> energy_uj path."""
    paths = {}
    for name, (folder, value) in zones.items():
        zone = root / "sys" / "class" / "powercap" / folder
        zone.mkdir(parents=True)
        (zone / "name").write_text(name + "\n")
        (zone / "max_energy_range_uj").write_text(f"{max_range}\n")
        write(zone / "energy_uj", value)
        paths[name] = zone / "energy_uj"
    return paths


class Driver:
    """A thread that moves a sensor file: ``power_w()`` watts, updated every ``period`` s, as a counter
    (microjoules accumulate) or as a power reading (microwatts)."""

    def __init__(self, path: Path, power_w, counter: bool, period: float = 0.02):
        self.path, self.power_w, self.counter, self.period = path, power_w, counter, period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        total, last = float(read_int(self.path) or 0), time.monotonic()
        for _ in range(100_000):  # bounded: 100k periods
            if self.stop.wait(self.period):
                return
            now = time.monotonic()
            watts = self.power_w()
            total += watts * 1e6 * (now - last)
            last = now
            write(self.path, int(total) if self.counter else int(watts * 1e6))

    def __enter__(self) -> Driver:  # noqa: PYI034 - typing.Self is 3.11+
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def test_rapl_uses_the_package_zones_not_their_sub_zones(tmp_path):
    rapl(tmp_path, {"package-0": ("intel-rapl:0", 10), "core": ("intel-rapl:0:0", 5),
                    "package-1": ("intel-rapl:1", 20)})
    meter = energy.find(tmp_path)
    assert meter.source == "rapl:package-0,package-1" and not meter.sampled
    assert meter.read_counters() == [10, 20]


def test_rapl_psys_alone_when_present(tmp_path):
    rapl(tmp_path, {"package-0": ("intel-rapl:0", 10), "psys": ("intel-rapl:1", 99)})
    assert energy.find(tmp_path).source == "rapl:psys"


def test_a_counter_that_wrapped_is_unwrapped_with_its_range(tmp_path):
    rapl(tmp_path, {"package-0": ("intel-rapl:0", 0)}, max_range=1000)
    meter = energy.find(tmp_path)
    assert meter.delta_uj([900], [100]) == 200
    hw = tmp_path / "hw" / "sys" / "class" / "hwmon" / "hwmon0"
    write(hw / "energy1_input", 5)
    counter = energy.find(tmp_path / "hw")
    assert counter.source == "hwmon-energy:hwmon0/energy1_input"
    with pytest.raises(OSError, match="went backwards"):
        counter.delta_uj([900], [100])


def test_no_sensor_is_null_with_the_reason(tmp_path):
    assert energy.find(tmp_path) is None
    doc = energy.result(None, None, None, None, None)
    assert doc["mj_per_inference"] is None and doc["reason"] == energy.NO_SENSOR


def test_idle_and_active_from_a_counter_moved_by_a_thread(tmp_path):
    path = rapl(tmp_path, {"package-0": ("intel-rapl:0", 1000)})["package-0"]
    meter = energy.find(tmp_path)
    watts = [3.0]
    with Driver(path, lambda: watts[0], counter=True):
        idle = energy.idle_uw(meter, 0.5)
        watts[0] = 8.0
        time.sleep(0.05)
        t0, before = time.monotonic(), meter.read_counters()
        time.sleep(0.5)
        after, seconds = meter.read_counters(), time.monotonic() - t0
    # (the driver updates every 20 ms: a reading may lag by one update at each end of a window)
    assert idle == pytest.approx(3e6, rel=0.2)
    doc = energy.result(meter, idle, meter.delta_uj(before, after), seconds, 100)
    assert doc["idle_mw"] == pytest.approx(3000, rel=0.2) and doc["active_mw"] == pytest.approx(8000, rel=0.2)
    # (8 W - 3 W) x 0.5 s / 100 inferences = 25 mJ
    assert doc["mj_per_inference"] == pytest.approx(25.0, rel=0.4) and doc["reason"] is None


def test_sampled_power_is_integrated_at_twenty_hertz(tmp_path):
    path = tmp_path / "sys" / "class" / "hwmon" / "hwmon2" / "power1_input"
    write(path, 2_000_000)
    (path.parent / "name").write_text("ina219\n")
    meter = energy.find(tmp_path)
    assert meter.sampled and meter.source == "hwmon-power:ina219/power1_input"
    with Driver(path, lambda: 5.0, counter=False, period=0.01):
        time.sleep(0.05)
        sampler = energy.PowerSampler(meter).start()
        time.sleep(1.0)
        energy_uj, seconds, samples = sampler.stop()
    assert seconds == pytest.approx(1.0, abs=0.1)
    assert 12 <= samples <= 24  # ~20 Hz
    assert energy_uj / seconds == pytest.approx(5e6, rel=0.05)


def test_active_power_not_above_idle_gives_no_number_but_the_reason(tmp_path):
    rapl(tmp_path, {"package-0": ("intel-rapl:0", 0)})
    meter = energy.find(tmp_path)
    doc = energy.result(meter, 4e6, 3e6, 1.0, 10)
    assert doc["mj_per_inference"] is None and "not above idle" in doc["reason"]


def busy_power(parent: int):
    """2 W, + 7 W while a child of ``parent`` (the worker) is running or waiting for a CPU (state R in
    /proc/<pid>/stat) - like a board whose power follows its load, independent of how busy the shared
    test machine is."""
    def power() -> float:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == parent and fields[0] == "R":
                return 9.0
        return 2.0

    return power


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rapl", "hwmon-power"])
def test_a_real_job_reports_energy_per_inference_above_idle(test_models, tmp_path, kind):
    if kind == "rapl":
        path, counter = rapl(tmp_path, {"package-0": ("intel-rapl:0", 0)})["package-0"], True
    else:
        path, counter = tmp_path / "sys" / "class" / "hwmon" / "hwmon0" / "power1_input", False
        write(path, 2_000_000)
    options = RunnerOptions(extra_env={"EDGEBENCH_AGENT_SYSFS_ROOT": str(tmp_path)})
    with Driver(path, busy_power(os.getpid()), counter=counter, period=0.02):
        doc = run_job(quick(test_models["bench_medium"], min_seconds=1.5, cpus="1"), options)
    assert doc["status"] == "ok", doc["error"]
    e = doc["energy"]
    assert e["source"].startswith("rapl:" if kind == "rapl" else "hwmon-power:"), e
    assert e["reason"] is None, e
    # the worker sleeps while idle is measured (the power follows it within one 20 ms update, so the end
    # of the model's loading may show in it) and runs while it infers
    assert 1500 < e["idle_mw"] < 4000  # 2 W, give or take the driver thread's own lag on a busy machine
    assert e["active_mw"] > e["idle_mw"] + 3000
    assert e["inferences"] > 0 and e["seconds"] > 0.9
    # 7 W above idle for the wall time of an inference: W x ms = mJ
    assert 0.5 * 7.0 * doc["timing"]["mean_ms"] < e["mj_per_inference"] <= 1.5 * 7.0 * doc["timing"]["mean_ms"]
    assert doc["processes"][0]["mj_per_inference"] == e["mj_per_inference"]
