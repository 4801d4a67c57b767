"""Fleet scaling: 16 loopback SSH devices x the demo family's 4 variants.

Three ratios (targets from issue #4), written to ``bench/results/fleet_scaling.json``:

1. controller wall time of ``edgebench run`` (the whole CLI process, as a user waits for it) vs the
   slowest device's own measuring time (the wall time of its ``agent batch``): target <= 1.15;
2. the same wall time vs a naive sequential loop that, per host and variant, does ``scp`` (agent + model)
   + ``ssh ... python agent.pyz run`` with the same measurement settings: target <= 0.15;
3. a second identical run's wall time vs the first's: target <= 0.7, with 0 bytes re-pushed.

Then the lean round trip (issue #9): RELAY_DEVICES of the same sshds are reached through a TCP relay on
127.0.0.1 that delivers every byte 50 ms after it arrived, each way (a simulated 100 ms RTT; the kernel
here has no netem). For a first run (fresh workdirs, empty info cache) and a cached run it reports per
device the round trips before measuring starts (targets <= 3 and <= 2, after the SSH handshake) and the
controller's overhead: the device's wall time in the controller minus its own measuring time (first job
start to last job end, device clock), against the target handshake + 3 RTT + transfer time (the bytes
pushed at the relay's measured raw throughput). ``--relay-only`` runs just that part and updates the
``relay`` key of the results file, keeping the other figures as they were.

Each device is its own sshd on 127.0.0.1 with its own workdir (fresh for the first run), running the
agent with the "bare device" venv (.venv-agent: numpy + ai-edge-litert). All 16 share this box's cores,
so a device's measuring time includes that contention; the ratios compare like with like.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures_fleet import DEVICE_PYTHON, SSHFactory, device_entry, keygen, write_inventory

DEVICES = 16
MODELS = REPO / "models" / "demo"
VARIANTS = ("fp32", "fp16", "dynamic", "int8")
SETTINGS = ["--runs", "20", "--warmup", "2", "--min-seconds", "1.0", "--warmup-min-seconds", "0.2"]
RUN_DEADLINE = 900
OUT = REPO / "bench" / "results" / "fleet_scaling.json"
RELAY_DEVICES = 4
RELAY_DELAY_S = 0.05  #: each way: a 100 ms round trip
RELAY_STOP_S = 5.0  #: at most this long to stop the relay's threads


class DelayRelay:
    """127.0.0.1:``port`` -> 127.0.0.1:``target``: every byte is passed on ``delay`` seconds after it
    arrived, in both directions, without limiting throughput (a reader and a writer thread per
    direction). Stopped (sockets closed, threads joined within RELAY_STOP_S) by :meth:`stop`."""

    def __init__(self, target: int, delay: float = RELAY_DELAY_S):
        self.target, self.delay = target, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            for sock in (client, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sockets.append(sock)
            for src, dst in ((client, upstream), (upstream, client)):
                line: queue.Queue = queue.Queue()
                self._spawn(self._read, src, line)
                self._spawn(self._write, dst, line)

    def _read(self, src: socket.socket, line: queue.Queue) -> None:
        data = b"x"
        while data:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            line.put((time.monotonic() + self.delay, data))

    def _write(self, dst: socket.socket, line: queue.Queue) -> None:
        while not self.stopping.is_set():
            try:
                due, data = line.get(timeout=0.2)
            except queue.Empty:
                continue
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()
        end = time.monotonic() + RELAY_STOP_S
        for thread in self.threads:
            thread.join(timeout=max(0.0, end - time.monotonic()))


def relay_throughput(nbytes: int = 8 << 20) -> float:
    """Bytes per second a DelayRelay carries one way (to a local sink), the delay taken out."""
    sink = socket.create_server(("127.0.0.1", 0))
    got = threading.Event()

    def drain() -> None:
        conn, _ = sink.accept()
        left = nbytes
        while left > 0:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            left -= len(chunk)
        conn.close()
        got.set()

    threading.Thread(target=drain, daemon=True).start()
    relay = DelayRelay(sink.getsockname()[1])
    try:
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
            sock.sendall(b"\0" * nbytes)
            got.wait(timeout=60)
        seconds = time.monotonic() - start - relay.delay
    finally:
        relay.stop()
        sink.close()
    return nbytes / max(seconds, 1e-3)


def controller_run(inventory: Path, out: Path, pyz: str, parallel: int = DEVICES, extra: tuple = (),
                   env: dict | None = None) -> tuple[float, dict]:
    """One ``edgebench run models/demo`` over the fleet (this tree's controller); (wall seconds, its --json
    document)."""
    argv = [str(REPO / ".venv" / "bin" / "python"), "-m", "controller", "run", str(MODELS), "--devices",
            str(inventory), "--out", str(out), "--parallel", str(parallel), "--no-eval", "--agent", pyz, "--json",
            *extra, *SETTINGS]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_DEADLINE, check=False, cwd=REPO,
                          env=env)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"edgebench run exited {proc.returncode}: {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def naive_loop(servers, key: Path, known_hosts: Path, root: Path, pyz: str) -> float:
    """scp + ssh + python per host and variant, one after the other; wall seconds."""
    ssh_opts = ["-i", str(key), "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes"]
    start = time.monotonic()
    for server in servers:
        remote_dir = root / f"naive-{server.name}"
        remote_dir.mkdir(parents=True)
        for variant in VARIANTS:
            model = MODELS / f"demo.{variant}.tflite"
            subprocess.run(["scp", "-q", *ssh_opts, "-P", str(server.port), pyz, str(model),
                            f"root@127.0.0.1:{remote_dir}/"],
                           check=True, timeout=120, capture_output=True)
            command = shlex.join([DEVICE_PYTHON, f"{remote_dir}/{Path(pyz).name}", "run",
                                  f"{remote_dir}/{model.name}", "--json", *SETTINGS])
            subprocess.run(["ssh", *ssh_opts, "-p", str(server.port), "root@127.0.0.1", command],
                           check=True, timeout=300, capture_output=True)
    return time.monotonic() - start


def relay_part(servers, key: Path, root: Path, pyz: str) -> dict:
    """First and cached run of RELAY_DEVICES devices behind DelayRelays: per-device round trips and
    controller overhead (see the module docstring)."""
    relays = [DelayRelay(s.port) for s in servers[:RELAY_DEVICES]]
    try:
        known_hosts = root / "relay_known_hosts"
        known_hosts.write_text("".join(s.host_key_line.replace(f"]:{s.port} ", f"]:{r.port} ", 1)
                                       for s, r in zip(servers, relays)))
        entries = [device_entry(s, key, known_hosts, root / f"relay work {s.name}", name=f"relay-{s.name}",
                                port=r.port) for s, r in zip(servers, relays)]
        inventory = write_inventory(root / "relay-devices.yaml", entries)
        env = dict(os.environ, XDG_CACHE_HOME=str(root / "relay-cache"))  # a first run asks `agent info`
        runs = [controller_run(inventory, root / "relay-reports", pyz, RELAY_DEVICES, ("--no-sync-start",), env)
                for _ in range(2)]
        command_s = command_cost(inventory)
    finally:
        for relay in relays:
            relay.stop()
    rtt = 2 * RELAY_DELAY_S
    rate = relay_throughput()
    out: dict = {"devices": RELAY_DEVICES, "rtt_s": rtt, "relay_throughput_mb_s": round(rate / 1e6, 1),
                 "one_command_s": command_s}
    for label, (wall, doc) in zip(("first", "cached"), runs):
        devices = []
        for name, d in sorted(doc["devices"].items()):
            overhead = d["seconds"] - (d["measuring_seconds"] or 0.0)
            handshake = d["phases"].get("connect", 0.0)
            transfer = d["bytes_pushed"] / rate
            devices.append({
                "device": name, "state": d["state"], "info_cached": d["info_cached"],
                "round_trips_before_measuring": d["round_trips_before_measuring"], "round_trips": d["round_trips"],
                "bytes_pushed": d["bytes_pushed"], "handshake_s": round(handshake, 3),
                "measuring_s": d["measuring_seconds"], "device_wall_s": round(d["seconds"], 3),
                "overhead_s": round(overhead, 3),
                "target_s": round(handshake + 3 * rtt + transfer, 3),
                "phases": d["phases"],
            })
        worst = max(devices, key=lambda d: d["overhead_s"])
        out[label] = {
            "wall_s": round(wall, 2), "devices": devices,
            "round_trips_before_measuring_max": max(d["round_trips_before_measuring"] or 0 for d in devices),
            "round_trips_target": 3 if label == "first" else 2,
            "overhead_s_max": worst["overhead_s"], "overhead_target_s_of_that_device": worst["target_s"],
        }
    return out


def command_cost(inventory: Path, tries: int = 5) -> float:
    """Median seconds of one trivial command (``true``) over an open connection to the first device of
    ``inventory``: what any round trip costs there (channel open + exec, the login shell's start-up)."""
    from controller.fleet.inventory import load
    from controller.fleet.transport import open_transport

    transport = open_transport(load(str(inventory)).devices[0])
    try:
        times = sorted(transport.run(["true"], timeout=30).seconds for _ in range(tries))
    finally:
        transport.close()
    return round(times[len(times) // 2], 3)


def write_result(result: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, OUT)


def print_relay(relay: dict) -> None:
    print(f"relay: one trivial command costs {relay['one_command_s']:.2f} s there (channel open + exec + login "
          f"shell), the relay carries {relay['relay_throughput_mb_s']} MB/s")
    for label in ("first", "cached"):
        part = relay[label]
        print(f"relay ({relay['rtt_s'] * 1000:.0f} ms RTT), {label} run: round trips before measuring "
              f"<= {part['round_trips_before_measuring_max']} per device (target <= {part['round_trips_target']}); "
              f"controller overhead per device <= {part['overhead_s_max']:.2f} s (target for that device "
              f"{part['overhead_target_s_of_that_device']:.2f} s = handshake + 3 RTT + transfer)")


def main() -> int:
    from controller.fleet.agent_build import agent_zipapp

    relay_only = "--relay-only" in sys.argv[1:]
    root = Path(tempfile.mkdtemp(prefix="edgebench-fleet-bench-"))
    key = keygen(root / "id_ed25519", "bench")
    factory = SSHFactory(root=root / "sshd", key=key)
    (root / "sshd").mkdir()
    env = dict(os.environ, XDG_CACHE_HOME=str(root / "cache"))  # no device info cached from earlier runs
    try:
        servers = [factory.start(f"dev-{i:02d}") for i in range(RELAY_DEVICES if relay_only else DEVICES)]
        known_hosts = root / "known_hosts"
        known_hosts.write_text("".join(s.host_key_line for s in servers))
        entries = [device_entry(s, key, known_hosts, root / f"work {s.name}") for s in servers]
        inventory = write_inventory(root / "devices.yaml", entries)
        pyz = shutil.copy(agent_zipapp(), root / "edgebench-agent.pyz")  # one agent for the whole benchmark
        relay = relay_part(servers, key, root, str(pyz))
        if not relay_only:
            wall1, first = controller_run(inventory, root / "reports", str(pyz), env=env)
            wall2, second = controller_run(inventory, root / "reports", str(pyz), env=env)
            naive = naive_loop(servers, key, known_hosts, root, str(pyz))
    finally:
        factory.stop_all()
    relay_ok = all(d["state"] == "done" for p in ("first", "cached") for d in relay[p]["devices"])
    if relay_only:
        result = json.loads(OUT.read_text()) if OUT.is_file() else {"benchmark": "fleet_scaling"}
        result["relay"] = dict(relay, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        write_result(result)
        print_relay(relay)
        shutil.rmtree(root, ignore_errors=True)
        return 0 if relay_ok else 1
    slowest1 = max(d["batch_seconds"] for d in first["devices"].values())
    slowest2 = max(d["batch_seconds"] for d in second["devices"].values())
    pushed1 = sum(d["bytes_pushed"] for d in first["devices"].values())
    pushed2 = sum(d["bytes_pushed"] for d in second["devices"].values())
    jobs = sum(d["jobs_done"] for d in first["devices"].values())
    def phases(doc: dict) -> dict:
        """Median and max seconds per device step (connect, probe, preflight, stage, gate, batch, fetch)."""
        steps = sorted({k for d in doc["devices"].values() for k in d["phases"]})
        out = {}
        for step in steps:
            values = sorted(d["phases"].get(step, 0.0) for d in doc["devices"].values())
            out[step] = {"median": round(values[len(values) // 2], 2), "max": round(values[-1], 2)}
        return out

    result = {
        "benchmark": "fleet_scaling",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu_count": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version()},
        "devices": DEVICES, "variants": list(VARIANTS), "jobs": jobs, "settings": SETTINGS,
        "first_run_wall_s": round(wall1, 2), "second_run_wall_s": round(wall2, 2),
        "slowest_device_measuring_s": round(slowest1, 2), "slowest_device_measuring_second_run_s": round(slowest2, 2),
        "naive_sequential_wall_s": round(naive, 2),
        "bytes_pushed_first": pushed1, "bytes_pushed_second": pushed2,
        "device_steps_first": phases(first), "device_steps_second": phases(second),
        "round_trips_before_measuring_first": sorted({d["round_trips_before_measuring"]
                                                      for d in first["devices"].values()}),
        "round_trips_before_measuring_second": sorted({d["round_trips_before_measuring"]
                                                       for d in second["devices"].values()}),
        "relay": dict(relay, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        "ratios": {
            "wall_vs_slowest_device": {"value": round(wall1 / slowest1, 3), "target": 1.15},
            "wall_vs_naive_sequential": {"value": round(wall1 / naive, 3), "target": 0.15},
            "second_vs_first_wall": {"value": round(wall2 / wall1, 3), "target": 0.7},
        },
    }
    write_result(result)
    for name, ratio in result["ratios"].items():
        verdict = "meets" if ratio["value"] <= ratio["target"] else "MISSES"
        print(f"{name}: {ratio['value']:.3f} ({verdict} target <= {ratio['target']})")
    print(f"first run {wall1:.1f} s, second {wall2:.1f} s, slowest device measuring {slowest1:.1f} s, naive "
          f"{naive:.1f} s; bytes pushed {pushed1} then {pushed2}")
    print_relay(relay)
    shutil.rmtree(root, ignore_errors=True)
    return 0 if jobs == DEVICES * len(VARIANTS) and pushed2 == 0 and relay_ok else 1


if __name__ == "__main__":
    sys.exit(main())
