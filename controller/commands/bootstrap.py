"""``edgebench bootstrap``: make devices ready (python3 checked, ``<workdir>/venv`` with a runtime)."""

from __future__ import annotations

import argparse

from controller.commands.selection import add_selection_arguments
from controller.model.compat import RUNTIMES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bootstrap",
        help="make devices ready: check python3, create <workdir>/venv, install a TFLite runtime",
        description="For each selected device: check python3, create <workdir>/venv and install the device's "
        "runtime (its `runtime:` key; auto = ai-edge-litert) with pip - online, or offline from the wheels of "
        "--wheels DIR that fit the device's arch and python (pushed by the controller). tflite-runtime gets "
        "numpy<2. Afterwards the device runs the agent with that venv (unless its entry sets python:).",
    )
    add_selection_arguments(p)
    p.add_argument("--wheels", metavar="DIR", help="install offline from the wheels in DIR (e.g. make wheels)")
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="install this runtime instead of the device's runtime key")
    p.add_argument("--daemon", action="store_true", help="also install the agent daemon as a systemd user "
                   "service (~/.config/systemd/user/edgebench-agent.service, enabled and started); where "
                   "systemd cannot be used, print the unit and start the daemon for now")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Bootstrap the selected devices in parallel; 0 when all are ready, 1 when some failed, 3 when all."""
    import json
    import sys

    from controller.commands.selection import selected_devices
    from controller.console import console
    from controller.fleet.agent_build import agent_zipapp
    from controller.fleet.bootstrap import BootstrapOptions, bootstrap_devices

    _, devices = selected_devices(args)
    options = BootstrapOptions(wheels=args.wheels, runtime=args.runtime, daemon=args.daemon)
    group = bootstrap_devices(devices, agent_zipapp(), options)
    reports = [o.value for o in group.outcomes.values()]
    if args.json:
        sys.stdout.write(json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
    else:
        out = console()
        for report in reports:
            head = "[green]ready[/]" if report.ok else f"[red]failed[/] ({report.kind}): {report.reason}"
            out.print(f"{report.device}: {head}")
            for step in report.steps:
                out.print(f"  - {step}")
            unit = report.daemon_unit
            if unit and not unit["installed"]:
                out.print(f"  {unit['unit_path']}:", highlight=False)
                out.print(unit["unit"], markup=False, highlight=False)
    return int(group.exit_code())
