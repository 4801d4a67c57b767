"""The fleet: devices.yaml loaded, validated and selected.

``load(path)`` reads a devices.yaml (DESIGN.md) and returns an :class:`Inventory` of :class:`Device`
values; every key is checked, and an unknown key, a wrong type or a bad value is a
:class:`~controller.errors.ConfigError` that names the file, the device and the key. ``select`` applies
``--device`` / ``--tag``. ``resolve_python`` is the ONE place that decides which interpreter runs the
agent on a device.

Ansible inventories are read by :mod:`controller.fleet.ansible` into the same :class:`Device` values.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.job import RUNTIME_CHOICES
from controller import defaults
from controller.errors import ConfigError, UsageError

TRANSPORTS = ("ssh", "local")
RUNTIMES = RUNTIME_CHOICES  #: a device's runtime key: the agent's choices

# Control characters would make names unprintable and ambiguous in logs, tables and file names.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Device:
    """One device of the fleet, as validated from the inventory.

    ``python`` is what the file asked for (None = not set); the interpreter actually used is decided by
    :func:`resolve_python`.
    """

    name: str
    transport: str = "ssh"  #: "ssh" or "local"
    host: str | None = None  #: address or ~/.ssh/config alias (ssh only; default: the name)
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None  #: known_hosts file to check (and --trust to write)
    proxy_jump: str | None = None  #: "[user@]host[:port]" of a gateway, or an alias
    ssh_config: str | None = None  #: ssh config file for aliases (default ~/.ssh/config)
    workdir: str = defaults.WORKDIR
    python: str | None = None  #: the device's own key (None = inherit, see resolve_python)
    default_python: str | None = None  #: from the file's `defaults:` section
    runtime: str = "auto"  #: which TFLite runtime jobs ask for (and bootstrap installs)
    tags: tuple[str, ...] = ()
    threads: tuple[int, ...] = ()  #: threads to run on this device (empty = the command line's)
    cpus: str | None = None  #: where jobs run on this device: all, big, little or "0,2-3" (None = --cpus)
    connect_timeout: float = defaults.CONNECT_TIMEOUT
    #: deadline of each remote command and file transfer; not of a batch (bounded by its jobs' timeouts)
    command_timeout: float = defaults.COMMAND_TIMEOUT
    lock_timeout: float = defaults.LOCK_TIMEOUT  #: how long a run waits for the device lock
    #: run jobs through the agent daemon on the device (a queue that outlives the SSH session)
    daemon: bool = False

    @property
    def is_local(self) -> bool:
        return self.transport == "local"


def resolve_python(device: Device, *, venv_python: str | None = None) -> str:
    """Return the interpreter that runs the agent on ``device``. The precedence, highest first:

    1. the device's own ``python:`` key;
    2. the venv ``edgebench bootstrap`` made on the device (``venv_python``, when it exists there);
    3. ``defaults: python:`` of the file — but only for SSH devices;
    4. the transport's default: this controller's own interpreter for ``transport: local`` (it has the
       runtimes), ``python3`` for SSH devices.
    """
    if device.python:
        return device.python
    if venv_python:
        return venv_python
    if device.is_local:
        return sys.executable
    if device.default_python:
        return device.default_python
    return "python3"


@dataclass
class Inventory:
    """The devices of one inventory file, in file order."""

    path: str
    devices: list[Device] = field(default_factory=list)

    def names(self) -> list[str]:
        return [d.name for d in self.devices]

    def get(self, name: str) -> Device:
        """Return the device called ``name``; raise UsageError listing the known names."""
        for device in self.devices:
            if device.name == name:
                return device
        raise UsageError(f"no device {name!r} in {self.path}; devices there: {', '.join(self.names())}")

    def select(self, names: Sequence[str] = (), tags: Sequence[str] = ()) -> list[Device]:
        """Devices named in ``names`` or carrying one of ``tags``; all devices when both are empty.

        Raises UsageError for a name that is not in the inventory, a tag no device has, or an empty
        selection.
        """
        if not names and not tags:
            return list(self.devices)
        for name in names:
            self.get(name)
        known_tags = {t for d in self.devices for t in d.tags}
        for tag in tags:
            if tag not in known_tags:
                raise UsageError(
                    f"no device in {self.path} has tag {tag!r}; tags there: {', '.join(sorted(known_tags))}"
                )
        chosen = [d for d in self.devices if d.name in names or set(tags) & set(d.tags)]
        return chosen


# Keys of a device entry and of `defaults:`: name -> (types accepted, description for errors).
DEVICE_KEYS: dict[str, tuple[tuple, str]] = {
    "name": ((str,), "a string"),
    "transport": ((str,), f"one of {', '.join(TRANSPORTS)}"),
    "host": ((str,), "a string (address or ~/.ssh/config alias)"),
    "port": ((int,), "an integer 1-65535"),
    "user": ((str,), "a string"),
    "identity_file": ((str,), "a path"),
    "known_hosts": ((str,), "a path"),
    "proxy_jump": ((str,), "a string [user@]host[:port]"),
    "ssh_config": ((str,), "a path"),
    "workdir": ((str,), "a path"),
    "python": ((str,), "a command or path"),
    "runtime": ((str,), f"one of {', '.join(RUNTIMES)}"),
    "tags": ((list,), "a list of strings"),
    "threads": ((list, int), "a list of positive integers"),
    "cpus": ((str, int), "all, big, little or a CPU list like 0,2-3"),
    "connect_timeout": ((int, float), "a positive number of seconds"),
    "command_timeout": ((int, float), "a positive number of seconds"),
    "lock_timeout": ((int, float), "a number of seconds >= 0"),
    "daemon": ((bool,), "true or false"),
}
_DEFAULT_KEYS = tuple(k for k in DEVICE_KEYS if k not in ("name", "host", "port"))
_SECRET_KEYS = ("password", "passphrase", "ansible_password", "ansible_ssh_pass", "ansible_become_pass")
_PATH_KEYS = ("identity_file", "known_hosts", "ssh_config")


def load(path: str) -> Inventory:
    """Read and validate a devices.yaml.

    Raises InputError-like ConfigError when the file is missing, is not YAML, or any key is unknown,
    of the wrong type or out of range; the message names the file, the device and the key.
    """
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such devices file; pass --devices FILE or create it (see README)")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'devices:' (and optional 'defaults:')")
    unknown = sorted(set(data) - {"defaults", "devices"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}; allowed: defaults, devices")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: 'defaults' must be a mapping of device keys")
    check_entry(path, "defaults", defaults, _DEFAULT_KEYS)
    entries = data.get("devices")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: 'devices' must be a non-empty list of devices")
    devices = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: devices[{index}] must be a mapping with at least 'name'")
        label = entry.get("name") if isinstance(entry.get("name"), str) else f"devices[{index}]"
        check_entry(path, label, entry, tuple(DEVICE_KEYS))
        devices.append(make_device(path, entry, defaults))
    return Inventory(path=path, devices=_unique(path, devices))


def make_device(path: str, entry: Mapping[str, Any], defaults: Mapping[str, Any]) -> Device:
    """Build one validated Device from a checked entry and the file's defaults.

    ``defaults['python']`` is kept apart (``default_python``) so :func:`resolve_python` can apply it to
    SSH devices only. Raises ConfigError naming ``path``, the device and the key.
    """
    if "name" not in entry:
        raise ConfigError(f"{path}: a device has no 'name' key")
    name = entry["name"]
    merged = {k: v for k, v in defaults.items() if k != "python"}
    merged.update(entry)
    kwargs: dict[str, Any] = {"default_python": defaults.get("python")}
    for key, value in merged.items():
        kwargs[key] = _convert(path, name, key, value)
    if not name.strip() or _CONTROL.search(name) or "/" in name:
        raise ConfigError(
            f"{path}: device {name!r}: key 'name' must be non-empty, without '/' or control characters"
        )
    device = Device(**kwargs)
    if device.is_local:
        for key in ("host", "port", "user", "identity_file", "proxy_jump"):
            if key in entry:
                raise ConfigError(
                    f"{path}: device {name!r}: key {key!r} is for SSH devices, but transport is 'local'"
                )
    return device


def check_entry(path: str, label: str, entry: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in entry:
        if key in _SECRET_KEYS:
            raise ConfigError(
                f"{path}: device {label!r}: key {key!r}: no passwords in the inventory; use a key "
                "(identity_file) or ssh-agent"
            )
        if key not in allowed:
            raise ConfigError(
                f"{path}: device {label!r}: unknown key {key!r}; allowed keys: {', '.join(allowed)}"
            )
        types, what = DEVICE_KEYS[key]
        value = entry[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ConfigError(
                f"{path}: device {label!r}: key {key!r} must be {what}, got {type(value).__name__} {value!r}"
            )


def _convert(path: str, name: str, key: str, value: Any) -> Any:
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{path}: device {name!r}: key {key!r} {what}, got {value!r}")

    if key == "transport" and value not in TRANSPORTS:
        raise bad(f"must be one of {', '.join(TRANSPORTS)}")
    if key == "runtime" and value not in RUNTIMES:
        raise bad(f"must be one of {', '.join(RUNTIMES)}")
    if key == "port" and not 0 < value < 65536:
        raise bad("must be in 1-65535")
    if key == "tags":
        if not all(isinstance(t, str) and t and not _CONTROL.search(t) for t in value):
            raise bad("must be a list of non-empty strings")
        return tuple(value)
    if key == "threads":
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 1 for t in items):
            raise bad("must be a list of positive integers")
        return tuple(items)
    if key == "cpus":
        from agent.cpus import check_placement
        from agent.errors import UsageError as AgentUsageError

        try:
            check_placement(str(value))
        except AgentUsageError:
            raise bad("must be all, big, little or a CPU list like 0,2-3") from None
        return str(value)
    if key in ("connect_timeout", "command_timeout") and value <= 0:
        raise bad("must be > 0 seconds")
    if key == "lock_timeout" and value < 0:
        raise bad("must be >= 0 seconds")
    if key in _PATH_KEYS:
        return os.path.expanduser(value)
    if key in ("connect_timeout", "command_timeout", "lock_timeout"):
        return float(value)
    return value


def _unique(path: str, devices: list[Device]) -> list[Device]:
    seen = set()
    for device in devices:
        if device.name in seen:
            raise ConfigError(f"{path}: device {device.name!r} appears twice; names must be unique")
        seen.add(device.name)
    return devices
