"""A bench's paired differences, shared by the report, the map and the sweep: the units of every cell, their
clusters and strata, one method against every other (Holm over the headline family), and their text.

A unit is one (setting, seed, client); its cluster is the (setting, seed), one federation; its stratum is the
setting (``potara.reporting.stats``).
"""

from __future__ import annotations

import math
from collections import defaultdict

from ..reporting.outputs import difference, is_bound
from ..reporting.stats import ALPHA, holm
from .cell import Cell

POTARA = "potara"


def unit_accs(cells: dict[str, list[Cell]]) -> dict[str, dict[tuple, float]]:
    """Per method, the test accuracy of every (setting, seed, client) unit."""
    accs: dict[str, dict[tuple, float]] = defaultdict(dict)
    for setting, group in cells.items():
        for cell in group:
            for name, m in cell.methods.items():
                for row in m["per_client"]:
                    accs[name][(setting, cell.seed, row["client"])] = row["acc"]
    return dict(accs)


def cell_of(unit: tuple) -> tuple:
    """A unit's cluster: its (setting, seed), one federation."""
    return unit[:2]


def setting_of(unit: tuple) -> str:
    """A unit's stratum: its setting."""
    return unit[0]


def versus(accs: dict[str, dict[tuple, float]], name: str) -> dict[str, dict]:
    """``name`` − every other method (bounds included) over their shared units, clustered by cell, stratified by
    setting; Holm-corrected over the family ``in_family`` picks (a ``holm_family`` flag on each entry)."""
    if name not in accs:
        return {}
    diffs = {other: d for other in accs if other != name and (d := difference(accs[name], accs[other], cell_of,
                                                                               setting_of))}
    corrected = holm({other: d for other, d in diffs.items() if in_family(other)})
    return {other: {**corrected.get(other, d).to_dict(), "holm_family": other in corrected}
            for other, d in diffs.items()}


def in_family(other: str) -> bool:
    """Whether Potara − ``other`` is in the headline family: every peer and reference, no bound, no Potara variant."""
    return not is_bound(other) and not other.startswith(POTARA)


def delta_text(diff: dict | None) -> str:
    """``+0.004 [-0.010, +0.018]``: the mean difference and its interval, with its level when not 95%."""
    if diff is None:
        return "–"
    low, high = diff["ci"]
    level = "" if abs(diff["level"] - (1 - ALPHA)) < 1e-12 else f" {100 * diff['level']:.2f}%"
    return f"{diff['mean']:+.3f} [{'–' if missing(low) else f'{low:+.3f}, {high:+.3f}'}]{level}"


def p_text(diff: dict | None) -> str:
    """``0.012 / 0.004``: the t-test and sign-flip p, then `/ Holm 0.036` when corrected; '–' without a variance."""
    if diff is None or missing(diff["p_t"]):
        return "–"
    holm_p = f" / Holm {diff['p_holm']:.3f}" if diff.get("p_holm") is not None else ""
    return f"{diff['p_t']:.3f} / {diff['p_signflip']:.3f}{holm_p}"


def wtl_text(diff: dict | None) -> str:
    """Clients above / equal / below."""
    return "–" if diff is None else f"{diff['wins']}/{diff['ties']}/{diff['losses']}"


def verdict_text(diff: dict | None, bold: bool = False) -> str:
    """The verdict; a win or loss in bold when asked."""
    if diff is None:
        return "–"
    return f"**{diff['verdict']}**" if bold and diff["verdict"] in ("win", "loss") else diff["verdict"]


def missing(x: float | None) -> bool:
    """NaN in memory, null once read back from JSON."""
    return x is None or math.isnan(x)
