"""Ansible inventories (INI or YAML) read as an edgebench fleet.

Hosts become devices, groups become tags (every group a host is in, through ``children`` too; not
``all`` / ``ungrouped``). Honoured variables: ``ansible_host``, ``ansible_port``, ``ansible_user``,
``ansible_ssh_private_key_file``, ``ansible_python_interpreter`` and ``ansible_connection=local``; any
devices.yaml key can be set as ``edgebench_<key>`` (``edgebench_workdir``, ``edgebench_threads`` ...).
Other variables belong to Ansible plays and are ignored; password variables are refused.
Precedence (lowest first): ``all`` vars, then group vars from parent to child, then host vars.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from controller.errors import ConfigError
from controller.fleet.config_file import parse_yaml, read_text
from controller.fleet.inventory import DEVICE_KEYS, Device, Inventory, check_entry, make_device

_ANSIBLE_VARS = {
    "ansible_host": "host",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "identity_file",
    "ansible_python_interpreter": "python",
}
_PASSWORD_VARS = ("ansible_password", "ansible_ssh_pass", "ansible_become_pass", "ansible_become_password")
_IMPLICIT_GROUPS = ("all", "ungrouped")


class _Groups:
    """Hosts, group membership and variables as parsed, before they become devices."""

    def __init__(self) -> None:
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.group_hosts: dict[str, list[str]] = {}
        self.group_vars: dict[str, dict[str, Any]] = {}
        self.children: dict[str, list[str]] = {}

    def add_host(self, group: str, host: str, variables: Mapping[str, Any]) -> None:
        self.host_vars.setdefault(host, {}).update(variables)
        self.group_hosts.setdefault(group, [])
        if host not in self.group_hosts[group]:
            self.group_hosts[group].append(host)

    def groups_of(self, host: str) -> list[str]:
        """Every group ``host`` is in, parents before children (for variable precedence)."""
        parents: dict[str, list[str]] = {}
        for parent, kids in self.children.items():
            for kid in kids:
                parents.setdefault(kid, []).append(parent)
        direct = [g for g, hosts in self.group_hosts.items() if host in hosts]
        ordered: list[str] = []

        def visit(group: str, depth: int) -> None:
            if depth > 50:
                raise ConfigError(f"group {group!r}: children nest more than 50 levels (a cycle?)")
            for parent in parents.get(group, []):
                visit(parent, depth + 1)
            if group not in ordered:
                ordered.append(group)

        for group in direct:
            visit(group, 0)
        return ordered


def load_ansible(path: str) -> Inventory:
    """Read an Ansible inventory file (YAML if it parses as a mapping with groups, else INI).

    Raises ConfigError naming the file, the host and the variable for anything that does not fit.
    """
    text = read_text(path, "Ansible inventory", "pass --inventory FILE")
    groups = _parse_yaml(path, text) if path.endswith((".yml", ".yaml")) else _parse_ini(path, text)
    devices: list[Device] = []
    for host in groups.host_vars:
        member_of = groups.groups_of(host)
        variables: dict[str, Any] = dict(groups.group_vars.get("all", {}))
        for group in member_of:
            variables.update(groups.group_vars.get(group, {}))
        variables.update(groups.host_vars[host])
        entry = _entry(path, host, variables)
        entry["tags"] = entry.get("tags", []) + [g for g in member_of if g not in _IMPLICIT_GROUPS]
        check_entry(path, host, entry, tuple(DEVICE_KEYS))
        devices.append(make_device(path, entry, {}))
    if not devices:
        raise ConfigError(f"{path}: the Ansible inventory lists no hosts")
    return Inventory(path=path, devices=devices)


#: the spellings of a boolean Ansible accepts in an INI inventory
_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _entry(path: str, host: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": host}
    for var, value in variables.items():
        if var in _PASSWORD_VARS:
            raise ConfigError(f"{path}: host {host!r}: variable {var!r}: no passwords; use a key or ssh-agent")
        if var == "ansible_connection":
            if value == "local":
                entry["transport"] = "local"
            elif value not in ("ssh", "paramiko", "smart"):
                raise ConfigError(f"{path}: host {host!r}: ansible_connection={value!r} is not supported "
                                  "(use ssh or local)")
        elif var in _ANSIBLE_VARS:
            entry[_ANSIBLE_VARS[var]] = value
        elif var.startswith("edgebench_"):
            key = var[len("edgebench_"):]
            if key not in DEVICE_KEYS or key == "name":
                raise ConfigError(f"{path}: host {host!r}: unknown variable {var!r}; edgebench_<key> takes "
                                  f"a devices.yaml key: {', '.join(k for k in DEVICE_KEYS if k != 'name')}")
            if DEVICE_KEYS[key][0] == (bool,) and isinstance(value, str):  # INI text: as Ansible reads it
                value = _BOOLEANS.get(value.strip().lower(), value)
            entry[key] = value
    if entry.get("transport") == "local":
        for key in ("host", "port", "user", "identity_file"):
            entry.pop(key, None)  # Ansible sets these for local hosts too; they mean nothing there
    return entry


def _typed(text: str) -> Any:
    """An INI value as Ansible would read it: numbers and lists typed, everything else a string."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, list)) and not isinstance(value, bool) else text


def _parse_ini(path: str, text: str) -> _Groups:
    groups = _Groups()
    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[([^\]:]+)(?::(vars|children))?\]", line)
        if header:
            section, kind = header.group(1), header.group(2) or "hosts"
            groups.group_hosts.setdefault(section, [])
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: cannot read {line!r}: {exc}") from exc
        if kind == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                raise ConfigError(f"{path}:{number}: [{section}:vars] expects key=value, got {line!r}")
            groups.group_vars.setdefault(section, {})[key.strip()] = _typed(shlex.split(value)[0]
                                                                            if value.strip() else "")
        elif kind == "children":
            groups.children.setdefault(section, []).append(words[0])
        else:
            host, variables = words[0], {}
            if re.search(r"\[[^\]]*:[^\]]*\]", host):
                raise ConfigError(f"{path}:{number}: host ranges like {host!r} are not supported; list the "
                                  "hosts one per line")
            for word in words[1:]:
                key, sep, value = word.partition("=")
                if not sep:
                    raise ConfigError(f"{path}:{number}: host {host!r}: expected key=value, got {word!r}")
                variables[key] = _typed(value)
            groups.add_host(section, host, variables)
    return groups


def _parse_yaml(path: str, text: str) -> _Groups:
    data = parse_yaml(path, text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an Ansible YAML inventory is a mapping of groups (e.g. 'all:')")
    groups = _Groups()

    def walk(name: str, body: Any, depth: int) -> None:
        if depth > 50:
            raise ConfigError(f"{path}: group {name!r}: children nest more than 50 levels")
        body = body or {}
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: group {name!r} must be a mapping (hosts / vars / children)")
        unknown = sorted(set(body) - {"hosts", "vars", "children"})
        if unknown:
            raise ConfigError(f"{path}: group {name!r}: unknown key(s) {unknown}; expected hosts, vars, children")
        groups.group_hosts.setdefault(name, [])
        for host, variables in (body.get("hosts") or {}).items():
            if variables is not None and not isinstance(variables, dict):
                raise ConfigError(f"{path}: host {host!r} in group {name!r}: variables must be a mapping")
            groups.add_host(name, str(host), variables or {})
        groups.group_vars.setdefault(name, {}).update(body.get("vars") or {})
        for child, child_body in (body.get("children") or {}).items():
            groups.children.setdefault(name, []).append(child)
            walk(child, child_body, depth + 1)

    for name, body in data.items():
        walk(name, body, 0)
    return groups
