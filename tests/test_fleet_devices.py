"""``edgebench devices``: the table, ``--check`` against real loopback devices, ``--json``."""

from __future__ import annotations

import json
import os
import platform

from controller.cli import main
from tests.fixtures_fleet import DEVICE_PYTHON, device_entry, write_inventory


def test_devices_lists_the_fleet(ssh_fleet, tmp_path, capsys):
    inventory = ssh_fleet.inventory(tmp_path / "devices.yaml", local=True)
    assert main(["devices", "--devices", str(inventory), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["board-0", "board-1", "board-2", "board-3", "local"]
    assert rows[0]["address"] == f"root@127.0.0.1:{ssh_fleet.servers[0].port}"
    assert rows[4]["transport"] == "local" and rows[4]["address"] is None
    assert main(["devices", "--devices", str(inventory), "--tag", "local"]) == 0
    table = capsys.readouterr().out
    assert "local" in table and "board-0" not in table


def test_check_reports_facts_or_the_reason(ssh_fleet, sshd_factory, tmp_path, capsys):
    dead = sshd_factory.start("dead")
    known = tmp_path / "known_hosts"
    known.write_text(ssh_fleet.known_hosts.read_text() + dead.host_key_line)
    strange = dict(ssh_fleet.entries[1], name="stranger", known_hosts=str(tmp_path / "empty_known_hosts"))
    entries = [dict(ssh_fleet.entries[0], known_hosts=str(known)), strange,
               device_entry(dead, ssh_fleet.key, known, tmp_path / "dead work", connect_timeout=3),
               {"name": "local", "transport": "local", "python": DEVICE_PYTHON, "workdir": str(tmp_path / "lw")}]
    inventory = write_inventory(tmp_path / "devices.yaml", entries)
    dead.stop()
    code = main(["devices", "--devices", str(inventory), "--check", "--json", "--timeout", "60"])
    rows = {r["name"]: r["check"] for r in json.loads(capsys.readouterr().out)}
    assert code == 1
    for name in ("board-0", "local"):
        check = rows[name]
        assert check["reachable"], check
        assert check["arch"] == platform.machine() and check["cpu_count"] == os.cpu_count()
        assert check["python"] == platform.python_version() and check["python_executable"] == DEVICE_PYTHON
        litert = next(r for r in check["runtimes"] if r["name"] == "ai-edge-litert")
        assert litert["ok"] and litert["version"] == "2.3.0"
        assert check["disk_free_kb"] > 0 and check["mem_total_kb"] > 0 and check["agent_version"] == "0.1.0"
    assert rows["board-0"]["host_key"].startswith("SHA256:")
    assert not rows["dead"]["reachable"] and "cannot connect" in rows["dead"]["reason"]
    assert not rows["stranger"]["reachable"] and "--trust stranger" in rows["stranger"]["reason"]
    # The readable table says the same.
    assert main(["devices", "--devices", str(inventory), "--check", "--device", "dead"]) == 3
    assert "cannot connect" in capsys.readouterr().out
