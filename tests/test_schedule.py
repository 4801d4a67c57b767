"""``edgebench schedule``: what is written into a crontab / systemd units, that remove leaves every other
line alone, and that the installed command line really runs a nightly (executed the way cron and systemd
would: cron's %-unescaping, /bin/sh, an almost empty environment)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from controller.cli import main
from tests.fixtures_fleet import DEVICE_PYTHON, write_inventory

OTHER = (
    "# m h dom mon dow command\n"
    "MAILTO=ops@example.org\n"
    "*/5 * * * * /usr/local/bin/backup --tag '%Y' > /dev/null 2>&1\n"
    "\n"
    "15 4 * * 1 /bin/true # edgebench-schedule:weekly\n"
)
NIGHTLY = ["models/demo", "--tag", "lab", "--runs", "50"]


def cron_entry(crontab: Path, name: str = "nightly") -> str:
    [line] = [line for line in crontab.read_text().splitlines() if line.endswith(f"# edgebench-schedule:{name}")]
    return line


def run_like_cron(line: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Execute a crontab line's command as cron does: the text after the five time fields, % unescaped,
    through /bin/sh, with cron's minimal environment."""
    command = line.split(None, 5)[5].replace("\\%", "%")
    env = {"HOME": str(tmp_path), "LOGNAME": "root", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=300,
                          check=False, cwd="/")


def test_install_appends_one_tagged_line_and_remove_restores_the_file_byte_for_byte(tmp_path, capsys):
    crontab = tmp_path / "crontab"
    crontab.write_text(OTHER)
    assert main(["schedule", "install", "--at", "03:07", "--crontab-file", str(crontab), "--log",
                 str(tmp_path / "n.log"), "--", *NIGHTLY, "--out", "reports/100%"]) == 0
    assert crontab.read_text().startswith(OTHER)
    line = cron_entry(crontab)
    assert line.startswith(f"7 3 * * * cd {shlex.quote(os.getcwd())} && exec env PATH=")
    assert f"-m controller nightly models/demo --tag lab --runs 50 --out reports/100\\% >> {tmp_path}/n.log 2>&1" in line
    assert "crontab entry" in capsys.readouterr().out
    # installing again replaces the entry instead of adding a second one
    assert main(["schedule", "install", "--at", "23:59", "--crontab-file", str(crontab), "--", *NIGHTLY]) == 0
    assert cron_entry(crontab).startswith("59 23 * * * ")
    capsys.readouterr()
    assert main(["schedule", "show", "--crontab-file", str(crontab)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert [s.rsplit(":", 1)[1] for s in shown] == ["weekly", "nightly"]
    assert main(["schedule", "remove", "--crontab-file", str(crontab)]) == 0
    assert crontab.read_bytes() == OTHER.encode()  # the weekly entry of another name stays too
    assert main(["schedule", "remove", "--crontab-file", str(crontab)]) == 0
    assert "no schedule named 'nightly'" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["--at", "25:00", "--", "m"], "--at '25:00': give the time of day as HH:MM"),
    (["--"], "needs the nightly's arguments after --"),
    (["--", "m", "--no-such-option"], "the nightly arguments do not parse: "),
    (["--name", "a b", "--", "m"], "--name 'a b'"),
])
def test_bad_install_arguments_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    crontab = tmp_path / "crontab"
    assert main(["schedule", "install", "--crontab-file", str(crontab), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not crontab.exists()


def test_systemd_units_are_written_and_removed(tmp_path, capsys):
    units = tmp_path / "units"
    assert main(["schedule", "install", "--systemd", "--at", "01:05", "--systemd-dir", str(units), "--",
                 *NIGHTLY, "--out", "100%/$HOME"]) == 0
    service = (units / "edgebench-nightly.service").read_text()
    timer = (units / "edgebench-nightly.timer").read_text()
    assert "OnCalendar=*-*-* 01:05:00\nPersistent=true\nUnit=edgebench-nightly.service\n" in timer
    assert "WantedBy=timers.target" in timer
    assert f"WorkingDirectory={os.getcwd()}\n" in service and "Type=oneshot" in service
    assert '"-m" "controller" "nightly" "models/demo" "--tag" "lab" "--runs" "50" "--out" "100%%/$$HOME"' in service
    assert "not enabled (--systemd-dir)" in capsys.readouterr().out
    assert main(["schedule", "show", "--systemd-dir", str(units)]) == 0
    assert f"systemd: {units}/edgebench-nightly.timer" in capsys.readouterr().out
    assert main(["schedule", "remove", "--systemd-dir", str(units)]) == 0
    assert list(units.iterdir()) == []


@pytest.fixture
def short_nightly(tmp_path, test_models) -> list[str]:
    inventory = write_inventory(tmp_path / "devices.yaml", [
        {"name": "local", "transport": "local", "python": DEVICE_PYTHON, "workdir": str(tmp_path / "work")}])
    return [str(test_models["bench_tiny"]), "--devices", str(inventory), "--out", str(tmp_path / "reports"),
            "--runs", "10", "--min-seconds", "0", "--warmup-min-seconds", "0", "--cooldown", "0"]


@pytest.mark.slow
def test_the_installed_cron_line_really_runs_a_nightly(tmp_path, short_nightly):
    crontab = tmp_path / "crontab"
    log = tmp_path / "state" / "nightly.log"
    assert main(["schedule", "install", "--crontab-file", str(crontab), "--log", str(log), "--", *short_nightly]) == 0
    proc = run_like_cron(cron_entry(crontab), tmp_path)
    assert proc.returncode == 0, (proc.stdout, proc.stderr, log.read_text() if log.exists() else "")
    [run] = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert json.loads((run / "run.json").read_text())["kind"] == "nightly"
    assert (run / "regressions.json").is_file()
    output = log.read_text()
    assert f"# Nightly {run.name}" in output and "INFO controller.nightly.progress: local: done" in output


@pytest.mark.slow
def test_the_installed_systemd_service_really_runs_a_nightly(tmp_path, short_nightly):
    units = tmp_path / "units"
    assert main(["schedule", "install", "--systemd", "--systemd-dir", str(units), "--", *short_nightly]) == 0
    service = (units / "edgebench-nightly.service").read_text().splitlines()
    value = {k: v for k, _, v in (line.partition("=") for line in service if "=" in line)}
    env = {"HOME": str(tmp_path)}
    for line in service:
        if line.startswith("Environment="):
            key, _, val = shlex.split(line[len("Environment="):].replace("$$", "$").replace("%%", "%"))[0].partition("=")
            env[key] = val
    argv = shlex.split(value["ExecStart"].replace("$$", "$").replace("%%", "%"))
    proc = subprocess.run(argv, cwd=value["WorkingDirectory"], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert len([p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]) == 1
