"""Fault: the network link of 1 of 3 devices goes down in the middle of a run.

The cut device is a real sshd inside its own network namespace, joined to this host by a veth pair
(tests/netns.py); ``ip link set down`` on the host side is the cut (this kernel has no netem: nothing
answers any more, no RST, no FIN). The two other devices are loopback sshds. The controller runs as a
child process (bounded by a deadline). Asserted: the other devices' results are complete, every job of
every device has exactly one row (none lost, none duplicated), the cut device's finished jobs are kept
and the rest say why they did not run, and the device stops its batch (its lock is freed) by itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from controller.errors import DeviceError, ExitCode
from controller.fleet.inventory import Device
from controller.fleet.transport import open_transport
from tests.fixtures_fleet import device_entry, write_inventory
from tests.netns import NetNS, start_sshd

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
RUN_DEADLINE = 180.0
CUT_DEADLINE = 60.0
UNLOCK_DEADLINE = 30.0
# The device's sshd gives up on a silent client after 3 unanswered probes 1 s apart, closing the batch's
# stdin (which stops the batch: agent batch --stop-on-stdin-eof).
DEVICE_SSHD = "ClientAliveInterval 1\nClientAliveCountMax 3\n"


@pytest.fixture
def cut_board(tmp_path, ssh_key):
    """A loopback-less device: sshd in a fresh network namespace; (server, netns, workdir)."""
    netns = NetNS.create()
    root = tmp_path / "netns-sshd"
    root.mkdir()
    authorized_keys = root / "authorized_keys"
    authorized_keys.write_text(ssh_key.with_suffix(".pub").read_text())
    server = None
    try:
        server = start_sshd(netns, root, "cut", authorized_keys, extra_config=DEVICE_SSHD)
        yield server, netns, tmp_path / "cut work"
    finally:
        if server is not None:
            server.stop()
        netns.delete()


def lock_is_free(path: Path) -> bool:
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def test_link_cut_mid_run_on_one_of_three_devices(ssh_fleet, cut_board, family, tmp_path):
    server, netns, cut_workdir = cut_board
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(ssh_fleet.known_hosts.read_text() + server.host_key_line)
    entries = [dict(e, known_hosts=str(known_hosts), workdir=str(tmp_path / f"work {e['name']}"))
               for e in ssh_fleet.entries[:2]]
    entries.append(device_entry(server, ssh_fleet.key, known_hosts, cut_workdir, connect_timeout=5))
    inventory = write_inventory(tmp_path / "devices.yaml", entries)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # Each job measures for at least 1 s, so the cut lands while the cut device still has work queued.
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "run", str(family), "--devices", str(inventory), "--out", str(out),
         "--runs", "3", "--warmup", "1", "--min-seconds", "1", "--warmup-min-seconds", "0", "--no-eval",
         "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + CUT_DEADLINE
        while time.monotonic() < deadline and not list(out.glob("*/results/cut/[!.]*.json")):
            time.sleep(0.05)  # (.fetch-*.json: a download in progress)
        fetched_before_cut = len(list(out.glob("*/results/cut/[!.]*.json")))
        assert fetched_before_cut >= 1, f"the cut device finished no job within {CUT_DEADLINE} s"
        netns.cut()
        cut_at = time.time()
        stdout, stderr = proc.communicate(timeout=RUN_DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == ExitCode.PARTIAL, stderr
    doc = json.loads(stdout)
    cut = doc["devices"]["cut"]
    assert cut["state"] == "failed" and cut["kind"] == "unreachable"
    # Cut while a command runs: the keepalive probe goes unanswered; cut during a result's download: the
    # SFTP request does. Either way within seconds, not the command timeout (300 s here).
    assert "the link is dead" in cut["reason"] and "no answer" in cut["reason"]
    for name in ("board-0", "board-1"):
        status = doc["devices"][name]
        assert status["state"] == "done", status
        assert (status["jobs_done"], status["jobs_total"], status["jobs_failed"]) == (3, 3, 0)
    run_dir = Path(doc["run_dir"])
    results = pd.read_parquet(run_dir / "results.parquet")
    # One row per (device, job): nothing lost, nothing duplicated.
    assert len(results) == 9 and not results.duplicated(["device", "job_id"]).any()
    assert sorted(results.groupby("device").size().items()) == [("board-0", 3), ("board-1", 3), ("cut", 3)]
    others = results[results["device"] != "cut"]
    assert set(others["status"]) == {"ok"} and (others["p50_ms"] > 0).all()
    on_cut = results[results["device"] == "cut"]
    kept = on_cut[on_cut["status"] == "ok"]
    lost = on_cut[on_cut["status"] != "ok"]
    # What was fetched before the cut is kept (a job may have finished between the poll and the cut).
    assert fetched_before_cut <= len(kept) < 3 and (kept["p50_ms"] > 0).all()
    assert len(kept) == len(list((run_dir / "results" / "cut").glob("*.json"))) == cut["jobs_done"]
    assert not list(run_dir.rglob(".fetch-*")), "a download cut off left a partial file in the run folder"
    assert set(lost["status"]) == {"not_run"} and set(lost["error_kind"]) == {"unreachable"}
    assert all("the link is dead" in e for e in lost["error"])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["exit_code"] == ExitCode.PARTIAL and info["devices"]["cut"]["state"] == "failed"
    # The device notices the silent controller and stops its batch by itself: the lock is freed.
    deadline = cut_at + UNLOCK_DEADLINE
    while time.time() < deadline and not lock_is_free(cut_workdir / "lock"):
        time.sleep(0.2)
    assert lock_is_free(cut_workdir / "lock"), f"the cut device's batch still holds its lock after {UNLOCK_DEADLINE} s"


def test_a_file_transfer_on_a_cut_link_fails_in_seconds(cut_board, ssh_key, tmp_path):
    """The link goes down during an upload: the transfer stops with kind unreachable after the silence
    limit (keepalive + dead-after), not after the device's command_timeout."""
    server, netns, workdir = cut_board
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.host_key_line)
    device = Device("cut", host=server.host, port=server.port, user="root", identity_file=str(ssh_key),
                    known_hosts=str(known_hosts), connect_timeout=5, command_timeout=300)
    transport = open_transport(device)
    transport.keepalive_seconds, transport.dead_after_seconds = 1.0, 2.0
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # more than the link's buffers hold
    workdir.mkdir()
    outcome: dict = {}

    def cut_at_first_bytes(sent: int) -> None:
        if "cut" not in outcome:
            outcome["cut"] = sent
            netns.cut()

    def upload() -> None:
        start = time.monotonic()
        try:
            transport.put(str(big), str(workdir / "big.bin"), on_bytes=cut_at_first_bytes)
        except DeviceError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    thread.join(timeout=60)
    try:
        assert not thread.is_alive(), "the upload on a dead link was still waiting after 60 s"
    finally:
        transport.close()
    assert "cut" in outcome and "error" in outcome, outcome
    assert outcome["error"].kind == "unreachable" and "the link is dead" in outcome["error"].reason
    assert f"upload of {big}" in outcome["error"].reason
    assert outcome["seconds"] < 20
