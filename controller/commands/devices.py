"""`edgebench devices` (placeholder until its issue lands; replace this whole module)."""

from controller.errors import UsageError


def register(sub):
    p = sub.add_parser("devices", help="(not yet implemented)")
    p.set_defaults(func=_run)


def _run(args):
    raise UsageError("'devices' is not implemented yet")
