"""The device-selection options every fleet command shares (``--devices``, ``--inventory``, ``--device``,
``--tag``) and the one function that turns them into the selected devices."""

from __future__ import annotations

import argparse

from controller import defaults
from controller.fleet.ansible import load_ansible
from controller.fleet.inventory import Device, Inventory, load


def add_inventory_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--devices FILE`` and ``--inventory FILE``: where the fleet is described."""
    parser.add_argument("--devices", metavar="FILE", default=defaults.DEVICES_FILE,
                        help=f"the fleet file (default: ./{defaults.DEVICES_FILE})")
    parser.add_argument("--inventory", metavar="FILE",
                        help="read the fleet from an Ansible inventory (INI or YAML) instead")


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--devices FILE``, ``--inventory FILE``, ``--device NAME`` and ``--tag TAG`` to a parser."""
    add_inventory_arguments(parser)
    parser.add_argument("--device", metavar="NAME", action="append", default=[],
                        help="only this device (repeatable)")
    parser.add_argument("--tag", metavar="TAG", action="append", default=[],
                        help="only devices with this tag (repeatable)")


def selected_devices(args: argparse.Namespace) -> tuple[Inventory, list[Device]]:
    """Load the inventory named by the parsed selection arguments and apply ``--device`` / ``--tag``.

    Raises ConfigError for a bad file, UsageError for an unknown name or tag.
    """
    inventory = load_inventory(args)
    return inventory, inventory.select(args.device, args.tag)


def load_inventory(args: argparse.Namespace) -> Inventory:
    """The fleet named by ``--inventory`` (an Ansible inventory) or else ``--devices``. Raises
    ConfigError for a bad file."""
    return load_ansible(args.inventory) if args.inventory else load(args.devices)
