"""Reading a YAML configuration file (devices.yaml, an Ansible YAML inventory) strictly and with lines.

:func:`read_yaml` refuses what PyYAML lets through silently or with a traceback: a byte that is not
UTF-8 (named with its line), a key given twice in one mapping (YAML says keys are unique; PyYAML keeps
the last one), and a path that is no regular file (a FIFO would block, /dev/zero read forever). Every
mapping it returns is a :class:`Marked` dict that remembers the line of each key, so validation errors
about a well-formed file can still say ``devices.yaml:12:`` (:func:`where`).
"""

from __future__ import annotations

from typing import Any

from agent.regular_file import NotRegularFile, open_regular
from controller.errors import ConfigError

MAX_CONFIG_BYTES = 16 * 2**20  #: a fleet file this large is a wrong path (a disk image, a sparse file)


class Marked(dict):
    """A mapping read from YAML: ``line`` is where it starts, ``lines[key]`` where each key is (1-based)."""

    line: int | None = None
    lines: dict

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lines = {}


def where(path: str, mapping: Any, key: Any = None) -> str:
    """``path:line`` of ``key`` in ``mapping`` (or of the mapping itself), or just ``path`` when the
    mapping did not come from :func:`read_yaml` (e.g. an INI inventory)."""
    line = None
    if isinstance(mapping, Marked):
        line = mapping.lines.get(key) if key is not None else None
        line = line or mapping.line
    return f"{path}:{line}" if line else str(path)


class _Duplicate(Exception):
    def __init__(self, key: Any, line: int, first: int):
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


def _loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader whose mappings are Marked and refuse duplicate keys (merge keys ``<<`` may still be
        overridden, as YAML intends)."""

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Marked:
        first_line: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise _Duplicate(key, line, first_line[key])
            first_line[key] = line
        loader.flatten_mapping(node)
        mapping = Marked(loader.construct_pairs(node, deep=deep))
        mapping.line = node.start_mark.line + 1
        mapping.lines = first_line
        return mapping

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


def read_yaml(path: str, what: str, hint: str) -> Any:
    """The YAML document of ``path`` (mappings as :class:`Marked`).

    ``what`` names the file in errors ("devices file"); ``hint`` says what to do when it is missing.
    Raises ConfigError naming the file (and the line where there is one) when the path is missing or no
    readable regular file, holds a byte that is not UTF-8, is not valid YAML, or repeats a key.
    """
    return parse_yaml(path, read_text(path, what, hint))


def read_text(path: str, what: str, hint: str) -> str:
    """The UTF-8 text of the config file ``path``. Raises ConfigError naming the file (and the line of a
    byte that is not UTF-8) when it is missing, no readable regular file, or not UTF-8."""
    try:
        with open_regular(path) as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except NotRegularFile as exc:
        raise ConfigError(f"{what} {exc}" + (f"; {hint}" if exc.missing else "")) from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_CONFIG_BYTES // 2**20} MiB: not a config file; "
                          "check the path")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; save the {what} as "
                          "UTF-8") from None


def parse_yaml(path: str, text: str) -> Any:
    """The YAML document in ``text`` read from ``path`` (mappings as :class:`Marked`). Raises ConfigError
    naming the file and the line for invalid YAML or a key given twice in one mapping."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # a SafeLoader subclass
    except _Duplicate as exc:
        raise ConfigError(f"{path}:{exc.line}: key {exc.key!r} appears twice in one mapping (first on line "
                          f"{exc.first}); keep one") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
