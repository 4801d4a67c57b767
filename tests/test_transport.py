"""LocalTransport and SSHTransport: one interface, one test body for both, against a real sshd.

Also: strict host keys (unknown / changed refused with the fingerprint and the fix; --trust records),
auth refused, unreachable, ssh config aliases, proxy_jump through a loopback gateway, quoting.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.cli import main
from controller.errors import DeviceError, HostKeyError
from controller.fleet.inventory import Device
from controller.fleet.ssh_connect import resolve_endpoint
from controller.fleet.transport import CommandTimeout, open_transport, shell_command
from tests.fixtures_fleet import DEVICE_PYTHON, keygen, write_inventory

PRINT_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"
NASTY = ["a b", "it's", 'say "hi"', "x; touch /tmp/INJECTED", "$(touch /tmp/INJECTED)", "`id`", "*", "~",
         "\\", "a\nb", "--", "-n", "", "é ü 日本"]


def ssh_device(fleet, index: int = 0, **changes) -> Device:
    entry = dict(fleet.entries[index])
    entry.update(changes)
    entry["tags"] = tuple(entry.get("tags", ()))
    return Device(**entry)


@pytest.fixture(params=["local", "ssh"])
def session(request, ssh_fleet, tmp_path):
    """An open transport: this machine, or board-0 over SSH."""
    if request.param == "local":
        device = Device("here", transport="local", workdir=str(tmp_path))
    else:
        device = ssh_device(ssh_fleet, 0)
    transport = open_transport(device)
    yield transport
    transport.close()


def test_arguments_reach_the_device_verbatim(session, tmp_path):
    canary = Path("/tmp/INJECTED")
    canary.unlink(missing_ok=True)
    result = session.run([DEVICE_PYTHON, "-c", PRINT_ARGV, *NASTY], timeout=30)
    assert result.ok, result.stderr
    assert json.loads(result.stdout) == NASTY
    assert not canary.exists()


def test_exit_code_stderr_and_streamed_lines(session):
    lines = []
    script = "import sys; print('one'); print('two', flush=True); sys.stderr.write('bad thing'); sys.exit(3)"
    result = session.run([DEVICE_PYTHON, "-c", script], timeout=30, on_line=lines.append)
    assert (result.exit_code, lines, result.stdout) == (3, ["one", "two"], "one\ntwo\n")
    assert "bad thing" in result.stderr
    with pytest.raises(DeviceError, match="exited 3.*bad thing"):
        result.check("dev")


def test_a_command_past_its_deadline_is_stopped(session):
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match="deadline"):
        session.run(["sleep", "20"], timeout=1.0)
    assert time.monotonic() - start < 15  # the sleep would take 20


def test_files_round_trip_with_awkward_names(session, tmp_path):
    folder = f"{tmp_path}/dev side/it's a $(dir); `x`"
    session.makedirs(folder)
    session.makedirs(folder)  # idempotent
    local = tmp_path / "payload.bin"
    payload = os.urandom(70_000)
    local.write_bytes(payload)
    seen = []
    sent = session.put(str(local), f"{folder}/m o d.tflite", on_bytes=seen.append)
    assert sent == len(payload) and seen[-1] == len(payload)
    assert session.exists(f"{folder}/m o d.tflite") and not session.exists(f"{folder}/m o d.part")
    back = tmp_path / "back.bin"
    assert session.get(f"{folder}/m o d.tflite", str(back)) == len(payload)
    assert back.read_bytes() == payload
    session.put_bytes(b"[1, 2]", f"{folder}/jobs.json")
    assert Path(folder, "jobs.json").read_bytes() == b"[1, 2]"


def test_home_and_tilde(session):
    assert session.expand("~/x/y") == session.home().rstrip("/") + "/x/y"
    assert session.expand("/abs") == "/abs"
    assert session.home() == os.path.expanduser("~")  # the loopback devices log in as this user


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                        max_size=20), min_size=1, max_size=4))
def test_quoting_round_trips_any_text_over_ssh(ssh_fleet, words):
    transport = _shared_ssh(ssh_fleet)
    result = transport.run([DEVICE_PYTHON, "-c", PRINT_ARGV, *words], timeout=30)
    assert result.ok, result.stderr
    assert json.loads(result.stdout) == words


_SHARED: dict = {}


def _shared_ssh(fleet):
    """One connection for all hypothesis examples (connecting per example would dominate)."""
    if "t" not in _SHARED:
        _SHARED["t"] = open_transport(ssh_device(fleet, 1))
    return _SHARED["t"]


def test_shell_command_refuses_nul_and_empty():
    with pytest.raises(ValueError):
        shell_command([])
    with pytest.raises(ValueError):
        shell_command(["echo", "a\x00b"])
    assert shell_command(["echo", "a b", "$(x)"]) == "echo 'a b' '$(x)'"


def test_unknown_host_key_is_refused_with_fingerprint_and_fix(ssh_fleet, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    device = ssh_device(ssh_fleet, 0, known_hosts=str(empty))
    with pytest.raises(HostKeyError) as info:
        open_transport(device)
    message = str(info.value)
    assert "not known" in message and "SHA256:" in message
    assert f"edgebench devices --trust {device.name}" in message and str(empty) in message


def test_changed_host_key_is_refused_then_trust_replaces_it(ssh_fleet, tmp_path, capsys):
    # known_hosts claims board-0's address has board-1's key: exactly what a swapped device looks like.
    server0, server1 = ssh_fleet.servers[0], ssh_fleet.servers[1]
    wrong = server1.host_key_line.replace(f"]:{server1.port} ", f"]:{server0.port} ")
    known = tmp_path / "known_hosts"
    known.write_text(wrong)
    devices_file = ssh_fleet.inventory(tmp_path / "devices.yaml")
    text = devices_file.read_text().replace(str(ssh_fleet.known_hosts), str(known))
    devices_file.write_text(text)
    device = ssh_device(ssh_fleet, 0, known_hosts=str(known))
    with pytest.raises(HostKeyError, match=r"CHANGED.*SHA256:.*SHA256:.*--trust board-0"):
        open_transport(device)
    assert main(["devices", "--devices", str(devices_file), "--trust", "board-0"]) == 0
    out = capsys.readouterr().out
    assert f"trusted host key of [127.0.0.1]:{server0.port} SHA256:" in out and "(replaced SHA256:" in out
    assert server0.host_key_line.split(" ", 1)[1].strip() in known.read_text()
    with open_transport(device) as transport:
        assert transport.run(["true"], timeout=30).ok


def test_trust_records_an_unknown_key(ssh_fleet, tmp_path):
    known = tmp_path / "sub" / "known_hosts"
    devices_file = ssh_fleet.inventory(tmp_path / "devices.yaml", names=["board-2"])
    devices_file.write_text(devices_file.read_text().replace(str(ssh_fleet.known_hosts), str(known)))
    assert main(["devices", "--devices", str(devices_file), "--trust", "board-2"]) == 0
    with open_transport(ssh_device(ssh_fleet, 2, known_hosts=str(known))) as transport:
        assert transport.host_key_fingerprint.startswith("SHA256:")


def test_auth_refused_and_unreachable_are_device_errors(ssh_fleet, tmp_path):
    stranger = keygen(tmp_path / "stranger", "stranger")
    with pytest.raises(DeviceError) as info:
        open_transport(ssh_device(ssh_fleet, 0, identity_file=str(stranger)))
    assert info.value.kind == "auth" and "authentication refused" in str(info.value)
    start = time.monotonic()
    with pytest.raises(DeviceError) as info:
        open_transport(ssh_device(ssh_fleet, 0, port=1, connect_timeout=3))
    assert info.value.kind == "unreachable" and time.monotonic() - start < 10


def test_ssh_config_alias(ssh_fleet, tmp_path):
    server = ssh_fleet.servers[3]
    config = tmp_path / "ssh_config"
    config.write_text(f"Host lab-board\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n"
                      f"  IdentityFile {ssh_fleet.key}\n  UserKnownHostsFile {ssh_fleet.known_hosts}\n")
    device = Device("aliased", host="lab-board", ssh_config=str(config))
    endpoint = resolve_endpoint(device)
    assert (endpoint.hostname, endpoint.port, endpoint.user) == ("127.0.0.1", server.port, "root")
    with open_transport(device) as transport:
        assert transport.run(["true"], timeout=30).ok


def test_proxy_jump_goes_through_the_gateway(sshd_factory, ssh_fleet, tmp_path):
    open_gw = sshd_factory.start("gw-open")
    closed_gw = sshd_factory.start("gw-closed", extra_config="AllowTcpForwarding no\n")
    known = tmp_path / "known_hosts"
    known.write_text(ssh_fleet.known_hosts.read_text() + open_gw.host_key_line + closed_gw.host_key_line)
    target = ssh_device(ssh_fleet, 0, known_hosts=str(known))
    through_open = Device(**{**target.__dict__, "proxy_jump": f"root@127.0.0.1:{open_gw.port}"})
    with open_transport(through_open) as transport:
        assert transport.run(["true"], timeout=30).ok
    # The same target through a gateway that forbids forwarding fails: the jump really is used.
    through_closed = Device(**{**target.__dict__, "proxy_jump": f"root@127.0.0.1:{closed_gw.port}"})
    with pytest.raises(DeviceError) as info:
        open_transport(through_closed)
    assert info.value.kind == "unreachable" and f"gateway root@127.0.0.1:{closed_gw.port}" in str(info.value)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo and len(found) < 100:
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        found += [int(c) for c in children]
        todo += [int(c) for c in children]
    return found


def test_a_dead_link_is_noticed_in_seconds(sshd_factory, ssh_fleet, tmp_path):
    import signal
    import threading

    server = sshd_factory.start("frozen")
    known = tmp_path / "known_hosts"
    known.write_text(server.host_key_line)
    device = Device("frozen", host="127.0.0.1", port=server.port, user="root", identity_file=str(ssh_fleet.key),
                    known_hosts=str(known), connect_timeout=5)
    transport = open_transport(device)
    transport.keepalive_seconds, transport.dead_after_seconds = 1.0, 2.0
    outcome: dict = {}

    def silent_command() -> None:
        start = time.monotonic()
        try:
            transport.run(["sleep", "60"], timeout=90)
        except DeviceError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=silent_command, daemon=True)
    thread.start()
    time.sleep(1.0)
    frozen = _descendants(server.proc.pid)  # this connection's sshd processes (children of our sshd)
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        thread.join(timeout=30)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        server.stop()
    assert not thread.is_alive()
    assert "link is dead" in str(outcome["error"]) and outcome["error"].kind == "unreachable"
    assert outcome["seconds"] < 10


def test_trust_through_a_gateway_records_the_gateway_and_the_device(sshd_factory, ssh_fleet, tmp_path, capsys):
    gateway = sshd_factory.start("gw-trust")
    known = tmp_path / "known_hosts"  # knows neither key
    entry = dict(ssh_fleet.entries[1], known_hosts=str(known), proxy_jump=f"root@127.0.0.1:{gateway.port}")
    devices_file = write_inventory(tmp_path / "devices.yaml", [entry])
    device = Device(**{**entry, "tags": tuple(entry["tags"])})
    with pytest.raises(HostKeyError, match="not known"):
        open_transport(device)
    assert main(["devices", "--devices", str(devices_file), "--trust", "board-1"]) == 0
    out = capsys.readouterr().out
    assert f"[127.0.0.1]:{gateway.port}" in out and f"[127.0.0.1]:{ssh_fleet.servers[1].port}" in out
    recorded = known.read_text()
    assert gateway.host_key_line.split(" ", 1)[1].strip() in recorded
    assert ssh_fleet.servers[1].host_key_line.split(" ", 1)[1].strip() in recorded
    with open_transport(device) as transport:
        assert transport.run(["true"], timeout=30).ok


def test_a_dropped_ssh_session_stops_the_remote_batch_and_frees_the_device_lock(ssh_fleet, agent_pyz, test_models,
                                                                              tmp_path):
    """The controller vanishes mid-job (its connection closes): the device sees stdin EOF, the agent
    unwinds like Ctrl-C, and the device lock is free for the next controller - not held for minutes."""
    import fcntl
    import threading

    from agent.lock import DeviceLock

    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"model": str(test_models["bench_medium"]), "id": "long", "runs": 10**6,
                                 "min_seconds": 120, "max_seconds": 120, "timeout": 300}]))
    lock = tmp_path / "dev.lock"
    transport = open_transport(ssh_device(ssh_fleet, 0))
    started = threading.Event()
    outcome: dict = {}

    def batch() -> None:
        try:
            outcome["result"] = transport.run(
                [DEVICE_PYTHON, str(agent_pyz), "batch", str(jobs), "--out", str(tmp_path / "out"), "--lock",
                 str(lock), "--stop-on-stdin-eof"], timeout=200, stdin_open=True,
                on_line=lambda line: started.set() if '"start"' in line else None)
        except DeviceError as exc:  # the connection closed under it: expected
            outcome["error"] = exc

    thread = threading.Thread(target=batch, daemon=True)
    thread.start()
    assert started.wait(60), "the batch never started its job"
    with open(lock) as fh, pytest.raises(BlockingIOError):  # held by the remote batch now
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    transport.close()
    thread.join(timeout=30)
    with DeviceLock(str(lock), timeout=60):  # BusyError if the remote batch still held it after 60 s
        pass
    assert not (tmp_path / "out" / "long.json").exists()  # the 120 s job did not run to its end
