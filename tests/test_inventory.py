"""devices.yaml and Ansible inventories: validation, selection, python precedence."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from controller.errors import ConfigError, UsageError
from controller.fleet.ansible import load_ansible
from controller.fleet.inventory import Device, load, resolve_python

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "devices.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


FLEET = """
    defaults:
      workdir: ~/eb
      python: python3
      connect_timeout: 4
    devices:
      - name: local
        transport: local
        tags: [local]
      - name: rpi4-a
        host: 10.0.0.21
        user: pi
        port: 2222
        identity_file: ~/.ssh/id_lab
        tags: [arm64, rpi4]
        threads: [1, 4]
      - name: jetson
        host: jetson.lab
        proxy_jump: gw.lab
        python: /opt/py/bin/python3
        tags: [arm64]
        workdir: /data/eb
"""


def test_devices_yaml_loads_with_defaults_merged(tmp_path):
    inv = load(write(tmp_path, FLEET))
    assert inv.names() == ["local", "rpi4-a", "jetson"]
    rpi = inv.get("rpi4-a")
    assert (rpi.host, rpi.user, rpi.port, rpi.threads, rpi.tags) == ("10.0.0.21", "pi", 2222, (1, 4),
                                                                     ("arm64", "rpi4"))
    assert rpi.identity_file == str(Path.home() / ".ssh" / "id_lab")
    assert rpi.workdir == "~/eb" and rpi.connect_timeout == 4.0
    assert inv.get("jetson").workdir == "/data/eb"
    assert inv.get("local").is_local and not rpi.is_local


def test_the_repository_devices_yaml_is_one_local_device():
    inv = load(str(REPO / "devices.yaml"))
    assert [(d.name, d.transport) for d in inv.devices] == [("local", "local")]


@pytest.mark.parametrize(
    "entry, words",
    [
        ("      - name: b1\n        hots: x\n", ["b1", "'hots'", "unknown key"]),
        ("      - name: b1\n        port: twenty\n", ["b1", "'port'", "integer"]),
        ("      - name: b1\n        port: 70000\n", ["b1", "'port'", "1-65535"]),
        ("      - name: b1\n        threads: [0]\n", ["b1", "'threads'", "from 1 to 256"]),
        ("      - name: b1\n        tags: arm64\n", ["b1", "'tags'", "list"]),
        ("      - name: b1\n        transport: telnet\n", ["b1", "'transport'", "ssh, local"]),
        ("      - name: b1\n        password: hunter2\n", ["b1", "'password'", "no passwords"]),
        ("      - name: b1\n        transport: local\n        host: x\n", ["b1", "'host'", "local"]),
        ("      - name: \"a\\tb\"\n", ["'name'", "control characters"]),
        ("      - name: b1\n      - name: b1\n", ["'b1'", "twice"]),
        ("      - host: x\n", ["no 'name'"]),
    ],
)
def test_bad_entries_name_file_device_and_key(tmp_path, entry, words):
    path = write(tmp_path, "devices:\n" + entry)
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert path in message
    for word in words:
        assert word in message


def test_bad_defaults_and_top_level_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"'defaults'.*unknown key 'workdirs'"):
        load(write(tmp_path, "defaults:\n  workdirs: /x\ndevices:\n  - name: a\n"))
    with pytest.raises(ConfigError, match="unknown top-level key"):
        load(write(tmp_path, "device:\n  - name: a\n"))
    with pytest.raises(ConfigError, match="missing.yaml does not exist; pass --devices FILE"):
        load(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(write(tmp_path, "devices: [\n"))


def test_selection_by_name_and_tag(tmp_path):
    inv = load(write(tmp_path, FLEET))
    assert [d.name for d in inv.select()] == ["local", "rpi4-a", "jetson"]
    assert [d.name for d in inv.select(tags=["arm64"])] == ["rpi4-a", "jetson"]
    assert [d.name for d in inv.select(names=["jetson"], tags=["local"])] == ["local", "jetson"]
    with pytest.raises(UsageError, match="no device 'nope'.*local, rpi4-a, jetson"):
        inv.select(names=["nope"])
    with pytest.raises(UsageError, match="tag 'x86'"):
        inv.select(tags=["x86"])


@pytest.mark.parametrize(
    "device, venv, expected",
    [
        # the device's own key beats everything
        (Device("a", python="/opt/py", default_python="python3"), "/w/venv/bin/python", "/opt/py"),
        (Device("a", transport="local", python="/opt/py"), "/w/venv/bin/python", "/opt/py"),
        # then the venv bootstrap made
        (Device("a", default_python="python3"), "/w/venv/bin/python", "/w/venv/bin/python"),
        (Device("a", transport="local", default_python="python3"), "/w/venv/bin/python", "/w/venv/bin/python"),
        # then defaults: python - for SSH devices only
        (Device("a", default_python="python3.11"), None, "python3.11"),
        (Device("a", transport="local", default_python="python3.11"), None, sys.executable),
        # then the transport's default
        (Device("a"), None, "python3"),
        (Device("a", transport="local"), None, sys.executable),
    ],
)
def test_python_precedence(device, venv, expected):
    assert resolve_python(device, venv_python=venv) == expected


def test_defaults_python_reaches_ssh_devices_not_local_ones(tmp_path):
    inv = load(write(tmp_path, FLEET))
    assert resolve_python(inv.get("rpi4-a")) == "python3"
    assert resolve_python(inv.get("jetson")) == "/opt/py/bin/python3"
    assert resolve_python(inv.get("local")) == sys.executable


ANSIBLE_INI = """
    # a lab inventory
    gateway ansible_host=10.0.0.1

    [rpi]
    rpi-a ansible_host=10.0.0.21 ansible_user=pi ansible_ssh_private_key_file=~/.ssh/lab
    rpi-b ansible_host=10.0.0.22 ansible_port=2222 edgebench_threads="[1, 4]"

    [x86]
    ws ansible_connection=local ansible_host=127.0.0.1

    [rpi:vars]
    ansible_user=pi
    edgebench_workdir=/srv/eb
    ansible_python_interpreter=/usr/bin/python3

    [arm:children]
    rpi
"""

ANSIBLE_YAML = """
    all:
      vars:
        edgebench_connect_timeout: 3
      hosts:
        gateway:
          ansible_host: 10.0.0.1
      children:
        arm:
          children:
            rpi:
              vars:
                ansible_user: pi
              hosts:
                rpi-a:
                  ansible_host: 10.0.0.21
                  ansible_ssh_private_key_file: ~/.ssh/lab
                rpi-b:
                  ansible_host: 10.0.0.22
                  ansible_port: 2222
                  edgebench_threads: [1, 4]
        x86:
          hosts:
            ws:
              ansible_connection: local
"""


@pytest.mark.parametrize("name, text", [("hosts.ini", ANSIBLE_INI), ("hosts.yml", ANSIBLE_YAML)])
def test_ansible_inventory_hosts_become_devices_groups_become_tags(tmp_path, name, text):
    inv = load_ansible(write(tmp_path, text, name))
    by_name = {d.name: d for d in inv.devices}
    assert set(by_name) == {"gateway", "rpi-a", "rpi-b", "ws"}
    a, b = by_name["rpi-a"], by_name["rpi-b"]
    assert (a.host, a.user, a.port, a.identity_file) == ("10.0.0.21", "pi", None, str(Path.home() / ".ssh/lab"))
    assert (b.host, b.user, b.port, b.threads) == ("10.0.0.22", "pi", 2222, (1, 4))
    assert set(a.tags) == {"rpi", "arm"} and set(by_name["ws"].tags) == {"x86"}
    assert by_name["ws"].is_local and by_name["ws"].host is None
    assert by_name["gateway"].tags == ()
    assert [d.name for d in inv.select(tags=["arm"])] == ["rpi-a", "rpi-b"]


def test_ansible_group_vars_and_host_vars_precedence(tmp_path):
    inv = load_ansible(write(tmp_path, ANSIBLE_INI, "hosts.ini"))
    a = inv.get("rpi-a")
    assert a.workdir == "/srv/eb" and a.python == "/usr/bin/python3"
    assert inv.get("gateway").workdir == "~/.cache/edgebench"
    yml = load_ansible(write(tmp_path, ANSIBLE_YAML, "hosts.yml"))
    assert yml.get("rpi-b").connect_timeout == 3.0


@pytest.mark.parametrize(
    "text, words",
    [
        ("[g]\nh ansible_password=x\n", ["'h'", "ansible_password", "no passwords"]),
        ("[g]\nh edgebench_colour=red\n", ["'h'", "edgebench_colour"]),
        ("[g]\nh ansible_port=abc\n", ["'h'", "'port'"]),
        ("[g]\nweb[01:10].lab\n", ["ranges"]),
        ("[g]\nh ansible_connection=winrm\n", ["winrm"]),
    ],
)
def test_ansible_errors_name_file_host_and_variable(tmp_path, text, words):
    path = write(tmp_path, text, "hosts.ini")
    with pytest.raises(ConfigError) as info:
        load_ansible(path)
    assert path in str(info.value)
    for word in words:
        assert word in str(info.value)
