"""Fleet runs through the agent daemon (`daemon: true`): the devices.yaml key, runs over real sshd, a
link cut mid-run, the daemon SIGKILLed mid-run, two controllers on one device, `--resume`."""

from __future__ import annotations

import pytest

from controller.errors import ConfigError
from controller.inventory import load


def write(tmp_path, text):
    path = tmp_path / "devices.yaml"
    path.write_text(text)
    return str(path)


def test_the_daemon_key_is_a_validated_boolean(tmp_path):
    inv = load(write(tmp_path, "defaults:\n  daemon: true\ndevices:\n  - name: a\n  - name: b\n    daemon: false\n"))
    assert [d.daemon for d in inv.devices] == [True, False]
    assert load(write(tmp_path, "devices:\n  - name: a\n")).devices[0].daemon is False
    for bad in ("yes please", "1", "[true]"):
        with pytest.raises(ConfigError, match=r"device 'a': key 'daemon' must be true or false"):
            load(write(tmp_path, f"devices:\n  - name: a\n    daemon: {bad}\n"))
    with pytest.raises(ConfigError, match="'port' must be an integer"):  # other keys still refuse booleans
        load(write(tmp_path, "devices:\n  - name: a\n    port: true\n"))
