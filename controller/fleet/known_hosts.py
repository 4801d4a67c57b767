"""The known_hosts file: read as OpenSSH writes it, and a trusted key recorded without losing a line.

paramiko's own reader raises ``InvalidHostKey`` on the marker lines OpenSSH allows (``@cert-authority``,
``@revoked``) and its writer drops every comment and marker line. Here:

* ``@revoked`` is honoured: a key on such a line is never accepted, for any host (stricter than OpenSSH,
  which matches the line's host patterns too), even if another line lists it as trusted.
* ``@cert-authority`` lines are kept but not used: edgebench does not verify host certificates. A host
  that is known only through a CA is refused as unknown, and the message says CA trust is not supported
  and how to trust the device's own key instead.
* A line paramiko cannot parse (unknown key type, bad base64) is skipped, as OpenSSH does.
* :func:`record` rewrites the file atomically keeping every other line as it was, and refuses (the key
  is NOT recorded) when the path is not a regular file (``/dev/null``) or cannot be written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from agent.regular_file import NotRegularFile, open_regular
from controller.errors import ConfigError


@dataclass
class KnownHosts:
    """What a known_hosts file says."""

    path: str
    entries: list = field(default_factory=list)  #: paramiko HostKeyEntry of the plain lines, revoked left out
    revoked: dict = field(default_factory=dict)  #: (key type, base64) -> line number of its @revoked line
    cert_authority_lines: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  #: the file's text, line by line (for :func:`record`)

    def revoked_line(self, key: Any) -> int | None:
        """The line that revokes ``key`` (a paramiko PKey), or None."""
        return self.revoked.get((key.get_name(), key.get_base64()))

    def fill(self, host_keys: Any) -> None:
        """Add every trusted (not revoked) key to paramiko ``HostKeys`` (e.g. ``client.get_host_keys()``)."""
        for entry in self.entries:
            for name in entry.hostnames:
                host_keys.add(name, entry.key.get_name(), entry.key)

    def ca_note(self) -> str:
        """A sentence for an unknown-key refusal when the file trusts hosts through a CA, else ''."""
        if not self.cert_authority_lines:
            return ""
        return (f" ({self.path} has @cert-authority line(s) {self.cert_authority_lines}: trusting host certificates "
                "through a CA is not supported by edgebench; trust the device's own key instead)")


def read(path: str) -> KnownHosts:
    """Parse ``path`` (a missing file is an empty one). Raises ConfigError naming the file when it exists
    but cannot be read or is not text."""
    from paramiko.hostkeys import HostKeyEntry

    known = KnownHosts(path)
    try:
        with open_regular(path) as fh:
            text = fh.read().decode("utf-8", "replace")
    except NotRegularFile as exc:
        if exc.missing:
            return known
        if exc.not_regular and os.path.realpath(path) == os.devnull:
            return known  # reading /dev/null is reading an empty file; recording into it is refused
        raise ConfigError(f"known_hosts {exc}; fix the path (device key 'known_hosts' or the ssh config's "
                          "UserKnownHostsFile)") from None
    known.lines = text.splitlines()
    for number, raw in enumerate(known.lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = None
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            line = line.strip()
        if marker == "@cert-authority":
            known.cert_authority_lines.append(number)
            continue
        try:
            entry = HostKeyEntry.from_line(line, number)
        except Exception:  # noqa: BLE001 - paramiko raises InvalidHostKey / SSHException / ValueError: skip
            entry = None  # the line, as OpenSSH does
        if entry is None:
            continue
        if marker == "@revoked":
            known.revoked[(entry.key.get_name(), entry.key.get_base64())] = number
        elif marker is None:
            known.entries.append(entry)
    if known.revoked:
        known.entries = [e for e in known.entries if known.revoked_line(e.key) is None]
    return known


def record(path: str, name: str, key: Any) -> str | None:
    """Record ``key`` (paramiko PKey) as the key of host ``name`` in ``path``; return the base64 of the key
    of the same type it replaced, or None.

    Every other line (comments, markers, other hosts, hashed names) is kept as it was. Raises ConfigError
    when the key is revoked in the file, the path is not a regular file, or the file cannot be written:
    in each case nothing was recorded.
    """
    import paramiko

    known = read(path)
    revoked = known.revoked_line(key)
    if revoked:
        raise ConfigError(f"the host key {key.get_name()} offered for {name} is REVOKED in {path} (line {revoked}); "
                          "not trusting it. Ask the device's owner which key it should have")
    if os.path.lexists(path) and not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "not a regular file"
        raise ConfigError(f"known_hosts {path} is {what}: the host key of {name} was NOT recorded; point the "
                          "device's 'known_hosts' key at a file")
    replaced = None
    kept: list[str] = []
    for raw in known.lines:
        line = raw.strip()
        entry = None
        if line and not line.startswith(("#", "@")):
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
            except Exception:  # noqa: BLE001 - an unparsable line is kept verbatim
                entry = None
        if entry is None or entry.key.get_name() != key.get_name():
            kept.append(raw)
            continue
        names = [h for h in entry.hostnames if not _matches(h, name)]
        if len(names) == len(entry.hostnames):
            kept.append(raw)
            continue
        replaced = replaced or entry.key.get_base64()
        if names:
            kept.append(raw.replace(",".join(entry.hostnames), ",".join(names), 1))
    kept.append(f"{name} {key.get_name()} {key.get_base64()}")
    _write(path, "\n".join(kept) + "\n", name)
    return None if replaced == key.get_base64() else replaced


def _matches(pattern: str, name: str) -> bool:
    import paramiko

    if pattern.startswith("|1|"):
        return paramiko.HostKeys.hash_host(name, pattern) == pattern
    return pattern == name


def _write(path: str, text: str, name: str) -> None:
    """Replace ``path`` atomically with ``text``, keeping the old file's mode (a new file: the umask rule)."""
    from controller.fleet.store import atomic_write

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else None
        atomic_write(path, text.encode("utf-8"), mode)
    except OSError as exc:
        raise ConfigError(f"cannot write known_hosts {path}: {exc.strerror or exc}; the host key of {name} was NOT "
                          "recorded") from None
