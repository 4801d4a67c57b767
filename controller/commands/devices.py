"""``edgebench devices``: the fleet as a table; ``--check`` contacts each device; ``--trust`` records a
device's host key."""

from __future__ import annotations

import argparse

from controller import defaults
from controller.commands.selection import add_selection_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "devices",
        help="list the fleet; --check contacts each device; --trust NAME records its host key",
        description="List the devices of devices.yaml (or --inventory). With --check each selected device is "
        "contacted in parallel (with a deadline) and shows whether it is reachable (or why not), its arch, "
        "python, runtimes, cores, memory, temperature, free disk in the workdir and agent version. "
        "--trust NAME fetches NAME's SSH host key and records it in the known_hosts file that device uses.",
    )
    add_selection_arguments(p)
    p.add_argument("--check", action="store_true", help="contact each device and show what it has")
    p.add_argument("--timeout", type=float, default=defaults.CHECK_DEADLINE,
                   help=f"deadline of --check for each device, seconds (default {defaults.CHECK_DEADLINE:g})")
    p.add_argument("--trust", metavar="NAME", action="append", default=[],
                   help="record NAME's current host key as trusted (replaces a changed one; repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List / check / trust; return 0, or 1 when some checked device is unreachable, 3 when none is."""
    import json
    import math
    import sys

    from controller.commands.selection import selected_devices
    from controller.console import console
    from controller.errors import ExitCode, UsageError
    from controller.fleet.view import devices_table

    if not math.isfinite(args.timeout) or not 0 < args.timeout <= defaults.MAX_CHECK_DEADLINE:
        raise UsageError(f"--timeout must be a number of seconds in (0, {defaults.MAX_CHECK_DEADLINE:g}], got "
                         f"{args.timeout}")
    inventory, devices = selected_devices(args)
    out = console()
    if args.trust:
        from controller.fleet.ssh_connect import trust_host_key

        for name in args.trust:
            device = inventory.get(name)
            if device.is_local:
                raise UsageError(f"device {name!r} is local (no SSH): it has no host key to trust")
            for key in trust_host_key(device):
                change = f" (replaced {key.replaced})" if key.replaced else ""
                out.print(f"{name}: trusted host key of {key.host} {key.fingerprint} recorded in "
                          f"{key.known_hosts}{change}", soft_wrap=True, highlight=False)
        return int(ExitCode.OK)
    rows = [_describe(d) for d in devices]
    group = None
    if args.check:
        from controller.fleet.check import check_devices

        group = check_devices(devices, args.timeout)
        for row in rows:
            outcome = group.outcomes[row["name"]]
            row["check"] = outcome.value if outcome.ok else {"reachable": False, "reason": outcome.reason,
                                                               "kind": outcome.kind}
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        out.print(devices_table(rows, checked=args.check))
    return int(group.exit_code()) if group is not None else int(ExitCode.OK)


def _describe(device) -> dict:
    address = None
    if not device.is_local:
        address = f"{device.user + '@' if device.user else ''}{device.host or device.name}"
        address += f":{device.port}" if device.port else ""
    return {"name": device.name, "transport": device.transport, "address": address, "tags": list(device.tags),
            "workdir": device.workdir, "python": device.python, "runtime": device.runtime,
            "threads": list(device.threads)}
