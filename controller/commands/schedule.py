"""``edgebench schedule install|remove|show``: run ``edgebench nightly`` every day from cron or systemd."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schedule",
        help="install, remove or show the daily `edgebench nightly` (cron or systemd user timer)",
        description="Run `edgebench nightly ARGS` every day: a user crontab entry (tagged "
        "`# edgebench-schedule:NAME`) or a systemd user timer + service. The job runs in the current folder "
        "with this python and the PATH / PYTHONPATH / EDGEBENCH_STORE of now.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    install = actions.add_parser("install", help="add (or replace) the schedule",
                                 description="Example: edgebench schedule install --at 02:30 -- models/demo --tag lab")
    install.add_argument("--at", default="02:30", metavar="HH:MM", help="time of day (default 02:30)")
    kind = install.add_mutually_exclusive_group()
    kind.add_argument("--cron", dest="kind", action="store_const", const="cron", help="a crontab entry (default)")
    kind.add_argument("--systemd", dest="kind", action="store_const", const="systemd",
                      help="a systemd user timer + service")
    install.add_argument("--log", metavar="FILE",
                         help="cron: append the nightly's output here (default ~/.local/state/edgebench/NAME.log)")
    install.add_argument("nightly_args", nargs=argparse.REMAINDER, metavar="-- NIGHTLY ARGS",
                         help="the arguments of `edgebench nightly` (after --)")
    remove = actions.add_parser("remove", help="remove the schedule (cron entry and/or systemd units)")
    show = actions.add_parser("show", help="print the installed schedules")
    for q in (install, remove, show):
        q.add_argument("--name", default="nightly", help="which schedule (default: nightly)")
        q.add_argument("--crontab-file", metavar="FILE",
                       help="read/write this file instead of the user crontab (crontab -l / crontab -)")
        q.add_argument("--systemd-dir", metavar="DIR",
                       help="write the units here and do not call systemctl (default: ~/.config/systemd/user)")
        q.set_defaults(func=run)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    from controller.errors import UsageError

    raise UsageError("schedule needs an action: install, remove or show (see `edgebench schedule --help`)")


def _check_nightly_args(nightly_args: list[str]) -> None:
    """Parse the nightly arguments now, so a typo fails here rather than at 2 am."""
    import contextlib
    import io

    from controller.cli import build_parser
    from controller.errors import UsageError

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args(["nightly", *nightly_args])
    except SystemExit as exc:
        if exc.code:
            raise UsageError("the nightly arguments do not parse: "
                             + err.getvalue().strip().splitlines()[-1]) from None


def run(args: argparse.Namespace) -> int:
    import shutil

    from controller.errors import UsageError
    from controller.history import schedule

    if args.action == "install":
        nightly_args = list(args.nightly_args)
        if nightly_args[:1] == ["--"]:
            nightly_args = nightly_args[1:]
        if not nightly_args:
            raise UsageError("schedule install needs the nightly's arguments after --, e.g. "
                             "`edgebench schedule install --at 02:30 -- models/demo`")
        _check_nightly_args(nightly_args)
        job = schedule.Job.create(nightly_args, at=args.at, name=args.name, log=args.log)
        if args.kind == "systemd":
            for path in schedule.systemd_install(job, args.systemd_dir):
                print(f"wrote {path}")
            if args.systemd_dir:
                print(f"not enabled (--systemd-dir): systemctl --user enable --now {schedule.unit_names(job.name)[1]}")
        else:
            line = schedule.cron_install(job, args.crontab_file)
            print(f"crontab entry ({args.crontab_file or 'user crontab'}):\n{line}")
        return 0
    # remove / show look at cron unless only --systemd-dir was given (and skip it when cron is not installed),
    # and at systemd unless only --crontab-file was given
    use_cron = bool(args.crontab_file) or (not args.systemd_dir and shutil.which("crontab") is not None)
    use_systemd = bool(args.systemd_dir) or not args.crontab_file
    if args.action == "remove":
        removed = schedule.cron_remove(args.name, args.crontab_file) if use_cron else []
        removed += schedule.systemd_remove(args.name, args.systemd_dir) if use_systemd else []
        for item in removed:
            print(f"removed {item}")
        if not removed:
            print(f"no schedule named {args.name!r} was installed")
        return 0
    if args.action == "show":
        entries = schedule.cron_entries(args.crontab_file) if use_cron else []
        timers = schedule.systemd_entries(args.systemd_dir) if use_systemd else []
        for line in entries:
            print(f"cron: {line}")
        for path in timers:
            print(f"systemd: {path}")
        if not entries and not timers:
            print("no edgebench schedule installed")
        return 0
    raise UsageError("schedule needs an action: install, remove or show")
