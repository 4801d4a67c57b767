"""The agent daemon as a systemd user service on a device: ``edgebench bootstrap --daemon``.

The unit runs ``<python> <workdir>/agent/current.pyz daemon --workdir <workdir>``; ``current.pyz`` is a
symlink the controller points at the agent build it pushed (:func:`link_current`), so the unit never
needs rewriting when the agent changes. ``Restart=always`` brings the daemon back after a crash or a
``daemon-client stop`` (that is how a fleet run swaps in a new agent build), and exit 4 (another daemon
already serves the workdir) is not retried. Where ``systemctl --user`` does not work (no systemd, no
user session bus), the unit is written to the same place and its text is returned for the user to
install by hand.
"""

from __future__ import annotations

import posixpath
from typing import Any

from controller.errors import DeviceError

UNIT_NAME = "edgebench-agent.service"
# Runs on the device: where systemd looks for user units ($XDG_CONFIG_HOME/systemd/user, ~/.config/...).
_UNIT_DIR_SCRIPT = ("import os; print(os.path.join(os.environ.get('XDG_CONFIG_HOME') or "
                    "os.path.expanduser('~/.config'), 'systemd', 'user'))")

# Runs on the device: point argv[2] (current.pyz) at argv[1] atomically (symlink + rename).
_LINK_SCRIPT = """
import os, sys
target, link = sys.argv[1], sys.argv[2]
tmp = link + '.tmp-' + str(os.getpid())
os.symlink(target, tmp)
os.replace(tmp, link)
"""


def unit_text(python: str, workdir: str) -> str:
    """The systemd user unit that runs the agent daemon on ``workdir`` with ``python``."""
    agent = posixpath.join(workdir, "agent", "current.pyz")
    return f"""[Unit]
Description=edgebench agent daemon (job queue on the Unix socket {workdir}/daemon/daemon.sock; no network port)
After=default.target

[Service]
Type=simple
ExecStart={python} {agent} daemon --workdir {workdir}
Restart=always
RestartSec=2
# 4: another daemon already serves this workdir (e.g. one started by `daemon --detach`): do not retry
RestartPreventExitStatus=4

[Install]
WantedBy=default.target
"""


def current_link(workdir: str) -> str:
    return posixpath.join(workdir, "agent", "current.pyz")


def link_current(session: Any) -> None:
    """Point ``<workdir>/agent/current.pyz`` at the session's agent build. Raises DeviceError kind "agent"."""
    result = session.run_python(["-c", _LINK_SCRIPT, session.agent, current_link(session.workdir)])
    if not result.ok:
        raise DeviceError(session.device.name, f"cannot link {current_link(session.workdir)}: "
                          f"{result.stderr.strip()[-300:]}", kind="agent")


def install(session: Any) -> dict[str, Any]:
    """Install (and start) the unit on the session's device: link ``current.pyz``, write the unit file,
    ``systemctl --user daemon-reload`` + ``enable --now``. Returns ``{"unit_path", "unit", "installed":
    bool, "reason"}``; ``installed`` is False (with the reason) where systemd cannot be used, and the
    caller prints the unit. Raises DeviceError when the unit file cannot be written."""
    link_current(session)
    text = unit_text(session.python, session.workdir)
    where = session.run_python(["-c", _UNIT_DIR_SCRIPT])
    if not where.ok:
        raise DeviceError(session.device.name, f"cannot find the systemd user unit folder: "
                          f"{where.stderr.strip()[-300:]}", kind="agent")
    unit_dir = where.stdout.strip().splitlines()[-1]
    session.t.makedirs(unit_dir)
    unit_path = posixpath.join(unit_dir, UNIT_NAME)
    session.t.put_bytes(text.encode(), unit_path)
    answer: dict[str, Any] = {"unit_path": unit_path, "unit": text, "installed": False, "reason": None}
    for argv in (["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", UNIT_NAME]):
        result = session.t.run(argv, timeout=session.device.command_timeout)
        if not result.ok:
            answer["reason"] = (f"`{' '.join(argv)}` failed (exit {result.exit_code}): "
                                f"{(result.stderr or result.stdout).strip()[-300:]}")
            return answer
    answer["installed"] = True
    return answer
