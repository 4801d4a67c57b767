"""The terminal rendering of a :class:`~controller.history.compare.Comparison` (rich tables only; the
verdicts come from :mod:`controller.history.compare`)."""

from __future__ import annotations

from rich.table import Table

from controller.history.compare import Comparison

_VERDICT_STYLE = {"regressed": "bold red", "improved": "green", "unchanged": "dim", "untested": "yellow"}


def comparison_table(comparison: Comparison, everything: bool = False) -> Table:
    """One row per compared job (regressions first); unchanged pairs only with ``everything``."""
    table = Table(title=f"{comparison.base} -> {comparison.new}", title_justify="left")
    for name in ("device", "model", "variant", "thr", "p50 base", "p50 new", "ratio", "p", "verdict", "why"):
        table.add_column(name, justify="right" if name in ("thr", "p50 base", "p50 new", "ratio", "p") else "left",
                         overflow="fold")
    order = {"regressed": 0, "improved": 1, "untested": 2, "unchanged": 3}
    for pair in sorted(comparison.pairs, key=lambda p: order.get(p.verdict, 9)):
        if pair.verdict == "unchanged" and not everything:
            continue
        verdict = pair.verdict + (f" ({', '.join(pair.kinds)})" if pair.kinds else "")
        table.add_row(pair.device, pair.model, pair.variant, str(pair.threads), _ms(pair.base_p50_ms),
                      _ms(pair.new_p50_ms), "-" if pair.ratio is None else f"x{pair.ratio:.3f}",
                      "-" if pair.p_value is None else f"{pair.p_value:.2g}",
                      f"[{_VERDICT_STYLE.get(pair.verdict, '')}]{verdict}[/]", "; ".join(pair.reasons))
    for item in comparison.unpaired:
        table.add_row(item.device, item.model, item.variant, str(item.threads), "", "", "", "",
                      f"[yellow]{item.kind.replace('_', ' ')}[/]", item.reason)
    return table


def summary_line(comparison: Comparison) -> str:
    """``3 regressed, 1 improved, 20 unchanged, 1 new, ...`` (only the non-zero counts)."""
    counts = comparison.to_dict()["counts"]
    order = ("regressed", "improved", "unchanged", "untested", "new", "missing", "not_comparable")
    parts = [f"{counts[k]} {k.replace('_', ' ')}" for k in order if counts.get(k)]
    return ", ".join(parts) or "nothing to compare"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
