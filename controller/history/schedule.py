"""Scheduling ``edgebench nightly``: a user crontab entry, or a systemd user timer + service.

The job runs ``<python> -m controller nightly ARGS`` in the folder ``schedule install`` was called from
(devices.yaml and relative paths mean what they meant then), with the environment variables that decide
which edgebench runs and where it stores (PATH, PYTHONPATH, EDGEBENCH_STORE) as they were at install time:
cron starts jobs with an almost empty environment.

A crontab entry is one line ending in the tag ``# edgebench-schedule:<name>`` (sh reads it as a comment);
``remove`` deletes exactly the lines with that tag and leaves every other line as it was. The crontab is
read and written with ``crontab -l`` / ``crontab -``, or as a plain file with ``crontab_file`` (tests, or
a system cron that reads a file). systemd units are ``edgebench-<name>.service`` + ``.timer`` in the user
unit folder; with an explicit ``unit_dir`` the files are only written (nothing is enabled).
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

from controller.errors import ToolError, UsageError

TAG = "# edgebench-schedule:"
ENV_KEYS = ("PATH", "PYTHONPATH", "EDGEBENCH_STORE")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Job:
    """What to run and when: ``nightly_args`` at ``hour:minute`` every day, from ``workdir``."""

    nightly_args: tuple[str, ...]
    hour: int = 2
    minute: int = 30
    name: str = "nightly"
    workdir: str = ""
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    log: str = ""  #: cron: stdout + stderr are appended here (systemd: the journal)

    @classmethod
    def create(cls, nightly_args: list[str], at: str = "02:30", name: str = "nightly", log: str | None = None,
               environ: dict[str, str] | None = None, workdir: str | None = None) -> Job:
        """A Job from command-line values. Raises UsageError for a bad time, name or argument."""
        match = _AT.match(at)
        if not match:
            raise UsageError(f"--at {at!r}: give the time of day as HH:MM (24 h), e.g. 02:30")
        if not _NAME.match(name):
            raise UsageError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (at most 40)")
        for arg in nightly_args:
            if "\n" in arg or "\r" in arg:
                raise UsageError(f"nightly argument {arg!r} holds a line break; a schedule cannot carry it")
        environ = os.environ if environ is None else environ
        env = {k: environ[k] for k in ENV_KEYS if environ.get(k)}
        log = log or os.path.join(_state_dir(environ), f"{name}.log")
        return cls(tuple(nightly_args), int(match.group(1)), int(match.group(2)), name,
                   os.path.abspath(workdir or os.getcwd()), sys.executable, env, os.path.abspath(log))

    @property
    def argv(self) -> list[str]:
        return [self.python, "-m", "controller", "nightly", *self.nightly_args]

    def shell_command(self) -> str:
        """The sh command line cron runs (before cron's ``%`` escaping)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        run = " ".join(shlex.quote(a) for a in self.argv)
        return (f"cd {shlex.quote(self.workdir)} && exec env {env} {run} >> {shlex.quote(self.log)} 2>&1"
                if env else f"cd {shlex.quote(self.workdir)} && exec {run} >> {shlex.quote(self.log)} 2>&1")

    def cron_line(self) -> str:
        """``M H * * * <command> # edgebench-schedule:<name>`` (``%`` escaped, as crontab(5) requires)."""
        return f"{self.minute} {self.hour} * * * {self.shell_command().replace('%', chr(92) + '%')} {TAG}{self.name}"


# --- cron -------------------------------------------------------------------------------------------------

def read_crontab(crontab_file: str | None = None) -> str:
    """The current crontab text ('' when there is none). Raises ToolError when ``crontab`` fails."""
    if crontab_file:
        try:
            with open(crontab_file, encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""
    proc = _crontab(["-l"])
    if proc.returncode != 0:
        if "no crontab" in proc.stderr.lower():
            return ""
        raise ToolError(f"`crontab -l` failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def write_crontab(text: str, crontab_file: str | None = None) -> None:
    """Replace the crontab with ``text``. Raises ToolError when ``crontab`` refuses it."""
    if crontab_file:
        from controller.fleet.store import atomic_write

        atomic_write(crontab_file, text.encode("utf-8"))
        return
    proc = _crontab(["-"], text)
    if proc.returncode != 0:
        raise ToolError(f"`crontab -` refused the new crontab (exit {proc.returncode}): {proc.stderr.strip()}")


def _crontab(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["crontab", *args], input=stdin, capture_output=True, text=True, timeout=30,
                              check=False)
    except FileNotFoundError:
        raise ToolError("the `crontab` command is not installed (Debian: apt-get install cron); use --systemd, "
                        "or --crontab-file FILE to write the entry into a file") from None


def _tagged(line: str, name: str | None) -> bool:
    tag = line.rstrip().rpartition(TAG)[2] if TAG in line else None
    return tag is not None and (name is None or tag == name)


def cron_install(job: Job, crontab_file: str | None = None) -> str:
    """Add ``job`` to the crontab (replacing an entry of the same name); return the line written."""
    lines = [line for line in read_crontab(crontab_file).splitlines() if not _tagged(line, job.name)]
    line = job.cron_line()
    os.makedirs(os.path.dirname(job.log), exist_ok=True)  # sh's >> cannot create the folder
    write_crontab("\n".join([*lines, line]) + "\n", crontab_file)
    return line


def cron_remove(name: str, crontab_file: str | None = None) -> list[str]:
    """Delete the entries tagged ``name``; every other line stays byte for byte. Returns the removed lines."""
    text = read_crontab(crontab_file)
    lines = text.splitlines(keepends=True)
    removed = [line.rstrip("\n") for line in lines if _tagged(line, name)]
    if removed:
        write_crontab("".join(line for line in lines if not _tagged(line, name)), crontab_file)
    return removed


def cron_entries(crontab_file: str | None = None) -> list[str]:
    """Every crontab line that ``schedule install`` wrote (any name)."""
    return [line for line in read_crontab(crontab_file).splitlines() if _tagged(line, None)]


# --- systemd ----------------------------------------------------------------------------------------------

def default_unit_dir(environ: dict[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    config = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "systemd", "user")


def unit_names(name: str) -> tuple[str, str]:
    return f"edgebench-{name}.service", f"edgebench-{name}.timer"


def systemd_quote(arg: str) -> str:
    """One ExecStart argument, quoted for systemd.service(5): ``%`` -> ``%%``, ``$`` -> ``$$``, and a
    double-quoted C-style string."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def systemd_units(job: Job) -> dict[str, str]:
    """File name -> content of the service and the timer."""
    service, timer = unit_names(job.name)
    env = "".join(f"Environment={systemd_quote(f'{k}={v}')}\n" for k, v in job.env.items())
    return {
        service: (f"# written by `edgebench schedule install` on {_today()}\n[Unit]\nDescription=edgebench "
                  f"nightly ({job.name})\n\n[Service]\nType=oneshot\nWorkingDirectory={job.workdir}\n{env}"
                  f"ExecStart={' '.join(systemd_quote(a) for a in job.argv)}\n"),
        timer: (f"# written by `edgebench schedule install` on {_today()}\n[Unit]\nDescription=edgebench "
                f"nightly ({job.name}) every day at {job.hour:02d}:{job.minute:02d}\n\n[Timer]\n"
                f"OnCalendar=*-*-* {job.hour:02d}:{job.minute:02d}:00\nPersistent=true\nUnit={service}\n\n"
                "[Install]\nWantedBy=timers.target\n"),
    }


def systemd_install(job: Job, unit_dir: str | None = None) -> list[str]:
    """Write the units; with the default unit folder also reload systemd and enable the timer. Returns the
    paths written. Raises ToolError when systemctl fails (the files stay, the message says what to run)."""
    from controller.fleet.store import atomic_write

    folder = unit_dir or default_unit_dir()
    os.makedirs(folder, exist_ok=True)
    paths = []
    for file_name, content in systemd_units(job).items():
        path = os.path.join(folder, file_name)
        atomic_write(path, content.encode("utf-8"))
        paths.append(path)
    if unit_dir is None:
        _systemctl("daemon-reload")
        _systemctl("enable", "--now", unit_names(job.name)[1])
    return paths


def systemd_remove(name: str, unit_dir: str | None = None) -> list[str]:
    """Disable the timer (default folder only) and delete both units; return the paths deleted."""
    folder = unit_dir or default_unit_dir()
    paths = [os.path.join(folder, f) for f in unit_names(name) if os.path.exists(os.path.join(folder, f))]
    if paths and unit_dir is None:
        _systemctl("disable", "--now", unit_names(name)[1])
    for path in paths:
        os.unlink(path)
    if paths and unit_dir is None:
        _systemctl("daemon-reload")
    return paths


def systemd_entries(unit_dir: str | None = None) -> list[str]:
    """Paths of the edgebench timers in the unit folder."""
    folder = unit_dir or default_unit_dir()
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.startswith("edgebench-") and f.endswith(".timer"))


def _systemctl(*args: str) -> None:
    command = ["systemctl", "--user", *args]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise ToolError("systemctl is not installed; use --cron instead") from None
    if proc.returncode != 0:
        raise ToolError(f"`{' '.join(command)}` failed (exit {proc.returncode}): {proc.stderr.strip()}; the unit "
                        "files are written - run it yourself once a user session is available "
                        "(loginctl enable-linger $USER lets timers run while logged out)")


def _state_dir(environ) -> str:
    state = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "edgebench")


def _today() -> str:
    return datetime.date.today().isoformat()
