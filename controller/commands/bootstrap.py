"""`edgebench bootstrap` (placeholder until its issue lands; replace this whole module)."""

from controller.errors import UsageError


def register(sub):
    p = sub.add_parser("bootstrap", help="(not yet implemented)")
    p.set_defaults(func=_run)


def _run(args):
    raise UsageError("'bootstrap' is not implemented yet")
