"""known_hosts as lab machines have them (issue 11, defect 6) and the connect-failure reasons: against
real loopback sshd devices. ``@revoked`` is honoured, ``@cert-authority`` said to be unsupported, and
``devices --trust`` keeps every line and never claims a key it did not record."""

from __future__ import annotations

import json
import time

import pytest

from controller.cli import main
from controller.errors import ExitCode
from tests.fixtures_fleet import free_port, write_inventory

CA_LINE = "@cert-authority *.lab.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEu2GdhpLVhAWrc6bGmLlvSd2mmbp47sHcIiEZSnDRPM\n"


def check(tmp_path, capsys, entry: dict) -> tuple[int, dict, float]:
    inventory = write_inventory(tmp_path / "devices.yaml", [entry])
    start = time.monotonic()
    code = main(["devices", "--devices", str(inventory), "--check", "--json", "--timeout", "60"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, json.loads(captured.out)[0]["check"], time.monotonic() - start


def test_cert_authority_and_comment_lines_do_not_stop_a_known_device(ssh_fleet, tmp_path, capsys):
    """Before: paramiko's InvalidHostKey, a thread traceback and 'no answer within 60 s'."""
    known = tmp_path / "known_hosts"
    known.write_text("# lab hosts\n" + CA_LINE + ssh_fleet.servers[0].host_key_line)
    code, row, _ = check(tmp_path, capsys, dict(ssh_fleet.entries[0], known_hosts=str(known)))
    assert code == ExitCode.OK and row["reachable"], row


def test_a_revoked_key_is_refused_at_once_even_when_also_listed(ssh_fleet, tmp_path, capsys):
    server = ssh_fleet.servers[0]
    known = tmp_path / "known_hosts"
    known.write_text(server.host_key_line + "@revoked " + server.host_key_line)
    code, row, elapsed = check(tmp_path, capsys, dict(ssh_fleet.entries[0], known_hosts=str(known)))
    assert code == ExitCode.NO_DEVICE and not row["reachable"]
    assert row["kind"] == "host_key" and "REVOKED" in row["reason"] and "(line 2)" in row["reason"]
    assert elapsed < 30  # the right error at once, not after the --check deadline


def test_a_device_known_only_through_a_ca_is_refused_saying_ca_trust_is_unsupported(ssh_fleet, tmp_path,
                                                                                    capsys):
    known = tmp_path / "known_hosts"
    known.write_text(CA_LINE)
    _, row, _ = check(tmp_path, capsys, dict(ssh_fleet.entries[0], known_hosts=str(known)))
    assert row["kind"] == "host_key" and "is not known" in row["reason"]
    assert "@cert-authority" in row["reason"] and "not supported" in row["reason"]


def test_trust_keeps_every_other_line_and_replaces_only_the_same_host_and_type(ssh_fleet, tmp_path, capsys):
    server = ssh_fleet.servers[1]
    known = tmp_path / "known_hosts"
    other = "[10.0.0.9]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEu2GdhpLVhAWrc6bGmLlvSd2mmbp47sHcIiEZSnDRPM\n"
    stale = f"[127.0.0.1]:{server.port} " + other.split(" ", 1)[1]
    known.write_text("# keep me\n" + CA_LINE + other + stale)
    inventory = write_inventory(tmp_path / "devices.yaml", [dict(ssh_fleet.entries[1], known_hosts=str(known))])
    assert main(["devices", "--devices", str(inventory), "--trust", server.name]) == ExitCode.OK
    assert "(replaced SHA256:" in capsys.readouterr().out
    assert known.read_text() == "# keep me\n" + CA_LINE + other + server.host_key_line
    code, row, _ = check(tmp_path, capsys, dict(ssh_fleet.entries[1], known_hosts=str(known)))
    assert code == ExitCode.OK and row["reachable"]


def test_trust_refuses_a_revoked_key(ssh_fleet, tmp_path, capsys):
    server = ssh_fleet.servers[1]
    known = tmp_path / "known_hosts"
    known.write_text("@revoked " + server.host_key_line)
    inventory = write_inventory(tmp_path / "devices.yaml", [dict(ssh_fleet.entries[1], known_hosts=str(known))])
    assert main(["devices", "--devices", str(inventory), "--trust", server.name]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "REVOKED" in err and "not trusting it" in err
    assert known.read_text() == "@revoked " + server.host_key_line


@pytest.mark.parametrize("target", ["/dev/null", "folder"])
def test_trust_into_a_file_that_cannot_hold_it_does_not_claim_success(ssh_fleet, tmp_path, capsys, target):
    """Before: `devices --trust` into /dev/null printed 'trusted ... recorded in /dev/null', exit 0."""
    path = target if target == "/dev/null" else str(tmp_path / "kh")
    if target == "folder":
        (tmp_path / "kh").mkdir()
    inventory = write_inventory(tmp_path / "devices.yaml", [dict(ssh_fleet.entries[1], known_hosts=path)])
    assert main(["devices", "--devices", str(inventory), "--trust", ssh_fleet.servers[1].name]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert f"known_hosts {path} is " in captured.err and "trusted host key" not in captured.out
    assert "NOT recorded" in captured.err or "is a directory" in captured.err


def test_a_missing_identity_file_is_a_config_error_naming_it(ssh_fleet, tmp_path, capsys):
    """Before: reported as 'unreachable'."""
    missing = tmp_path / "id_nope"
    _, row, _ = check(tmp_path, capsys, dict(ssh_fleet.entries[0], identity_file=str(missing)))
    assert row["kind"] == "config" and f"identity_file {missing} does not exist" in row["reason"]


def test_nothing_listening_says_connection_refused(ssh_fleet, tmp_path, capsys):
    """Before: '[Errno None] Unable to connect to port N on 127.0.0.1'."""
    _, row, _ = check(tmp_path, capsys, dict(ssh_fleet.entries[0], port=free_port()))
    assert row["kind"] == "unreachable"
    assert "connection refused: nothing listens on that port" in row["reason"]


def test_no_key_at_all_says_how_to_log_in(ssh_fleet, tmp_path, capsys, monkeypatch):
    """Before: paramiko's 'No existing session' / 'No authentication methods available', kind unreachable."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* here
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # no agent
    entry = {k: v for k, v in ssh_fleet.entries[0].items() if k != "identity_file"}
    _, row, _ = check(tmp_path, capsys, entry)
    assert row["kind"] == "auth" and "no key to log in with" in row["reason"], row
