"""The device-selection options every fleet command shares (``--devices``, ``--inventory``, ``--device``,
``--tag``) and the one function that turns them into the selected devices."""

from __future__ import annotations

import argparse

from controller import defaults
from controller.fleet.ansible import load_ansible
from controller.fleet.inventory import Device, Inventory, load


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--devices FILE``, ``--inventory FILE``, ``--device NAME`` and ``--tag TAG`` to a parser."""
    parser.add_argument("--devices", metavar="FILE", default=defaults.DEVICES_FILE,
                        help="the fleet file (default: ./devices.yaml)")
    parser.add_argument("--inventory", metavar="FILE",
                        help="read the fleet from an Ansible inventory (INI or YAML) instead")
    parser.add_argument("--device", metavar="NAME", action="append", default=[],
                        help="only this device (repeatable)")
    parser.add_argument("--tag", metavar="TAG", action="append", default=[],
                        help="only devices with this tag (repeatable)")


def selected_devices(args: argparse.Namespace) -> tuple[Inventory, list[Device]]:
    """Load the inventory named by the parsed selection arguments and apply ``--device`` / ``--tag``.

    Raises ConfigError for a bad file, UsageError for an unknown name or tag.
    """
    if args.inventory:
        inventory = load_ansible(args.inventory)
    else:
        inventory = load(args.devices)
    return inventory, inventory.select(args.device, args.tag)
