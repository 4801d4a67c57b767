"""``edgebench devices``: the fleet as a table; ``--check`` contacts each device; ``--trust`` records a
device's host key."""

from __future__ import annotations

import argparse

from controller.inventory import add_selection_arguments

CHECK_DEADLINE = 60.0
MAX_CHECK_DEADLINE = 3600.0


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
    p.add_argument("--timeout", type=float, default=CHECK_DEADLINE,
                   help=f"deadline of --check for each device, seconds (default {CHECK_DEADLINE:g})")
    p.add_argument("--trust", metavar="NAME", action="append", default=[],
                   help="record NAME's current host key as trusted (replaces a changed one; repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List / check / trust; return 0, or 1 when some checked device is unreachable, 3 when none is."""
    import json
    import math
    import sys

    from controller.errors import ExitCode, UsageError
    from controller.inventory import selected_devices
    from controller.report import console, devices_table

    if not math.isfinite(args.timeout) or not 0 < args.timeout <= MAX_CHECK_DEADLINE:
        raise UsageError(f"--timeout must be a number of seconds in (0, {MAX_CHECK_DEADLINE:g}], got {args.timeout}")
    inventory, devices = selected_devices(args)
    out = console()
    if args.trust:
        from controller.ssh_transport import trust_host_key

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
    if args.check:
        checks = check_devices(devices, args.timeout)
        for row in rows:
            row["check"] = checks[row["name"]]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        out.print(devices_table(rows, checked=args.check))
    if not args.check:
        return int(ExitCode.OK)
    reachable = sum(1 for r in rows if r["check"]["reachable"])
    if reachable == len(rows):
        return int(ExitCode.OK)
    return int(ExitCode.NO_DEVICE if reachable == 0 else ExitCode.PARTIAL)


def _describe(device) -> dict:
    address = None
    if not device.is_local:
        address = f"{device.user + '@' if device.user else ''}{device.host or device.name}"
        address += f":{device.port}" if device.port else ""
    return {"name": device.name, "transport": device.transport, "address": address, "tags": list(device.tags),
            "workdir": device.workdir, "python": device.python, "runtime": device.runtime,
            "threads": list(device.threads)}


def check_devices(devices, deadline: float) -> dict[str, dict]:
    """Contact each device in parallel (push the agent if absent, run ``agent info``); within
    ``deadline`` seconds each gives its facts or the reason it cannot be used."""
    import logging
    import threading
    import time

    from controller.errors import DeviceError, EdgebenchError
    from controller.fleet import DeviceSession, agent_zipapp

    pyz = agent_zipapp()
    checks: dict[str, dict] = {d.name: {"reachable": False, "reason": f"no answer within {deadline:g} s"}
                               for d in devices}

    def check(device) -> None:
        session = DeviceSession(device, pyz)
        try:
            session.open()
            session.ensure_agent()
            info = session.info()
        except DeviceError as exc:
            checks[device.name] = {"reachable": False, "reason": exc.reason, "kind": exc.kind}
            return
        except EdgebenchError as exc:  # a config problem of this device (e.g. its known_hosts): its reason
            checks[device.name] = {"reachable": False, "reason": str(exc), "kind": "config"}
            return
        except Exception as exc:  # a bug: this device's row says so at once (not "no answer within 60 s")
            logging.getLogger("edgebench").exception("checking device %s failed", device.name)
            checks[device.name] = {"reachable": False, "reason": f"internal error (a bug): {type(exc).__name__}: "
                                   f"{exc}", "kind": "internal"}
            return
        finally:
            session.close()
        env = info.get("env") or {}
        checks[device.name] = {
            "reachable": True, "host_key": session.status.host_key, "python_executable": session.python,
            "python": env.get("python"), "arch": env.get("arch"), "cpu_model": env.get("cpu_model"),
            "cpu_count": env.get("cpu_count"), "mem_total_kb": env.get("mem_total_kb"),
            "temp_c": env.get("temp_c", env.get("temp_c_before")), "disk_free_kb": info.get("disk_free_kb"),
            "agent_version": info.get("agent_version"), "runtimes": info.get("runtimes") or [],
            "bytes_pushed": session.status.bytes_pushed,
        }

    threads = [threading.Thread(target=check, args=(d,), daemon=True, name=f"check-{d.name}") for d in devices]
    end = time.monotonic() + deadline
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, end - time.monotonic()))
    return {name: dict(found) for name, found in checks.items()}  # late answers do not leak in
