"""devices.yaml read strictly (issue 11, defect 5): a byte that is not UTF-8, a key given twice, a device
name that is a path, and the line of every error in a well-formed file."""

from __future__ import annotations

import os

import pytest

from controller.cli import main
from controller.errors import ConfigError, ExitCode
from controller.fleet.ansible import load_ansible
from controller.fleet.inventory import load


def write(tmp_path, data: bytes | str, name: str = "devices.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def error_of(path: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    return str(info.value)


def test_a_byte_that_is_not_utf8_names_the_file_and_line(tmp_path, capsys):
    """Before: a UnicodeDecodeError traceback and exit 1."""
    path = write(tmp_path, b"devices:\n  - name: a\n    host: caf\xe9\n")
    assert error_of(path) == f"{path}:3: byte 0xe9 is not UTF-8 text; save the devices file as UTF-8"
    assert main(["devices", "--devices", path]) == ExitCode.USAGE
    assert f"{path}:3: byte 0xe9" in capsys.readouterr().err


def test_the_same_in_an_ansible_yaml_inventory(tmp_path):
    path = write(tmp_path, b"all:\n  hosts:\n    h\xff:\n", "hosts.yml")
    with pytest.raises(ConfigError, match=rf"{path}:3: byte 0xff is not UTF-8"):
        load_ansible(path)


@pytest.mark.parametrize("text,line,key,first", [
    ("devices:\n  - name: a\n    port: 22\n    host: x\n    port: 2222\n", 5, "'port'", 3),
    ("devices:\n  - name: a\ndevices:\n  - name: b\n", 3, "'devices'", 1),
    ("defaults:\n  workdir: /a\n  workdir: /b\ndevices:\n  - name: a\n", 3, "'workdir'", 2),
])
def test_a_key_given_twice_is_refused_naming_the_key_and_both_lines(tmp_path, text, line, key, first):
    """Before: the last value silently won."""
    path = write(tmp_path, text)
    assert error_of(path) == (f"{path}:{line}: key {key} appears twice in one mapping (first on line {first}); "
                              "keep one")


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    """`<<: *base` then a key of its own is how YAML overrides; that is not a duplicate."""
    path = write(tmp_path, "defaults: &base {user: pi}\ndevices:\n  - <<: *base\n    name: a\n    user: root\n")
    assert load(path).get("a").user == "root"


@pytest.mark.parametrize("name", [".", "..", " .. ", "a/b", "a\\b", "x" * 101])
def test_a_device_name_that_is_a_path_is_refused(tmp_path, name):
    """Before: '.' crashed the run folder writer (no results.parquet) and '..' wrote into the run folder's
    root."""
    path = write(tmp_path, f"devices:\n  - transport: local\n    name: '{name}'\n")  # single quotes: no escapes
    message = error_of(path)
    assert message.startswith(f"{path}:3: device ")
    assert "key 'name' must be a usable folder name" in message


@pytest.mark.parametrize("text,line,words", [
    ("devices:\n  - name: a\n    host: x\n    prot: 22\n", 4, "unknown key 'prot'"),
    ("devices:\n  - name: a\n\n    port: 70000\n", 4, "must be in 1-65535"),
    ("defaults:\n  connect_timeout: .nan\ndevices:\n  - name: a\n", 2, "finite number of seconds"),
    ("defaults:\n  lock_timeout: .inf\ndevices:\n  - name: a\n", 2, "finite number of seconds"),
    ("devices:\n  - name: a\n    command_timeout: -1\n", 3, "must be > 0"),
    ("devices:\n  - name: a\n    transport: local\n    user: pi\n", 4, "is for SSH devices"),
    ("devices: {}\n", 1, "non-empty list"),
])
def test_errors_in_a_well_formed_file_name_the_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line}: ") and words in message


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_devices_path_that_is_no_regular_file_is_refused_at_once(tmp_path, kind):
    path = tmp_path / "devices.yaml"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    words = "is a FIFO (named pipe), not a regular file" if kind == "fifo" else "is a directory"
    assert f"devices file {path} {words}" in error_of(str(path))
